import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageOps

import bad_images
from bad_images import BLUE, RED, WHITE, Classified, DeadLettered

from imagegraph.decode import UndecodableImage, decode_image, unrecognised_reason

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}
CORPUS_BYTES, CORPUS_PIXELS = 100_000, 1_000_000
CORPUS = {case.key: case for case in bad_images.corpus(CORPUS_BYTES, CORPUS_PIXELS)}


def decode_case(key: str, height: int, width: int, channels: int = 3):
    return decode_image(CORPUS[key].data, height, width, channels, max_bytes=CORPUS_BYTES,
                        max_pixels=CORPUS_PIXELS)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import skimage.data
    return Image.fromarray(skimage.data.astronaut())  # 512x512 RGB


def test_jpeg_to_rgb_at_target_size(photo):
    image = decode_image(bad_images.encode(photo, "JPEG"), 24, 32, 3, **LIMITS)
    assert image.pixels.shape == (24, 32, 3) and image.pixels.dtype == np.uint8
    assert (image.width, image.height, image.format) == (512, 512, "JPEG")


def test_png_to_grayscale(photo):
    image = decode_image(bad_images.encode(photo, "PNG"), 16, 16, 1, **LIMITS)
    assert image.pixels.shape == (16, 16, 1)
    assert image.format == "PNG"


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image = decode_image(bad_images.encode(rgba, "PNG"), 8, 8, 3, **LIMITS)
    assert image.pixels[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("key", sorted(CORPUS))
def test_corpus_case_is_classified_or_dead_lettered_with_its_reason(key):
    """Both channel counts the models use: the outcome does not depend on the model."""
    expected = CORPUS[key].expected
    for channels in (1, 3):
        if isinstance(expected, DeadLettered):
            with pytest.raises(UndecodableImage) as error:
                decode_case(key, 32, 32, channels)
            assert error.value.reason == expected.reason
        else:
            image = decode_case(key, 32, 32, channels)
            assert isinstance(expected, Classified)
            assert (image.width, image.height, image.format) == (
                expected.width, expected.height, expected.format)
            assert image.pixels.shape == (32, 32, channels)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_pixels_as_pillow_does(orientation):
    """Lossless PNG decoded at its displayed size (no resampling): pixels equal Pillow's."""
    pixels = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3  # no two alike
    exif = Image.Exif()
    exif[bad_images.ORIENTATION] = orientation
    data = bad_images.encode(Image.fromarray(pixels), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    image = decode_image(data, expected.shape[0], expected.shape[1], 3, **LIMITS)
    assert np.array_equal(image.pixels, expected)
    assert (image.height, image.width) == expected.shape[:2]


@pytest.mark.parametrize("target, decoded", [(64, 64), (100, 128), (256, 256), (300, 512)])
def test_jpeg_is_scaled_in_the_dct_to_the_smallest_size_not_below_the_target(
        photo, monkeypatch, target, decoded):
    sizes = []
    decode_jpeg = simplejpeg.decode_jpeg

    def recording(*args, **kwargs):
        pixels = decode_jpeg(*args, **kwargs)
        sizes.append(pixels.shape[:2])
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", recording)
    image = decode_image(bad_images.encode(photo, "JPEG"), target, target, 3, **LIMITS)
    assert sizes == [(decoded, decoded)]
    assert image.pixels.shape == (target, target, 3)


def test_jpeg_pixels_match_pillow_decoding(photo):
    """libjpeg-turbo's YCbCr->RGB and Pillow's differ by rounding only."""
    data = bad_images.encode(photo, "JPEG", quality=90)
    ours = decode_image(data, 512, 512, 3, **LIMITS).pixels.astype(int)
    pillows = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(ours - pillows).max() <= 2
    gray = decode_image(data, 512, 512, 1, **LIMITS).pixels[:, :, 0].astype(int)
    assert np.abs(gray - np.asarray(Image.open(io.BytesIO(data)).convert("L"))).mean() < 1


def test_jpeg_that_libjpeg_turbo_warns_about_still_decodes_through_pillow(photo):
    """Stray bytes between two header segments: libjpeg-turbo warns (simplejpeg raises in
    strict mode), Pillow and browsers show the picture."""
    data = bad_images.encode(photo, "JPEG")
    assert data[2:4] == b"\xff\xe0"  # SOI, then the JFIF segment of `length` bytes
    after_jfif = 4 + int.from_bytes(data[4:6], "big")
    padded = data[:after_jfif] + b"\x12\x34" + data[after_jfif:]
    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(padded, strict=True)
    assert np.array_equal(decode_image(padded, 32, 32, 3, **LIMITS).pixels,
                          decode_image(data, 32, 32, 3, **LIMITS).pixels)


def test_shrinking_averages_pixels_instead_of_skipping_them():
    """One-pixel black and white columns, 8 times the target's width: each output pixel is
    their mean (plain bilinear would sample two columns of the same colour)."""
    stripes = np.zeros((32, 128), np.uint8)
    stripes[:, 1::2] = 255
    image = decode_image(bad_images.encode(Image.fromarray(stripes), "PNG"), 4, 16, 1,
                         **LIMITS)
    assert np.abs(image.pixels.astype(int) - 128).max() <= 1


def test_16_bit_levels_are_scaled_not_clipped():
    image = decode_case("gray16.png", 32, 48, channels=1)  # at its own size: no resampling
    band_centres = image.pixels[16, [6, 18, 30, 42], 0].tolist()
    assert band_centres == [0, 64, 128, 255]  # 0, 16384, 32768, 65535 of 65535


def test_palette_transparency_is_composited_on_white():
    image = decode_case("palette-transparent.png", 24, 24)
    assert image.pixels[12, 3].tolist() == list(WHITE)   # transparent red entry
    assert image.pixels[12, 20].tolist() == list(BLUE)


def test_animated_gif_uses_its_first_frame():
    image = decode_case("animated.gif", 20, 30)
    assert {tuple(p) for p in image.pixels.reshape(-1, 3).tolist()} == {RED}


def test_cmyk_jpeg_converts_to_rgb():
    red, green, blue = decode_case("cmyk.jpg", 30, 40).pixels[15, 20].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied_to_pixels_and_size():
    """Stored 40x20, black left half; orientation 6 displays it 20 wide, 40 tall, black on top."""
    image = decode_case("exif-rotated.jpg", 40, 20, channels=1)
    assert (image.width, image.height) == (20, 40)
    assert image.pixels[5, 10, 0] < 30 and image.pixels[35, 10, 0] > 225


def test_webp_decodes():
    pixels = decode_case("halves.webp", 24, 36).pixels
    assert pixels[12, 4].tolist() == list(RED) and pixels[12, 30].tolist() == list(WHITE)


def test_tiff_decodes_to_the_pixels_it_stores():
    expected = np.asarray(bad_images.photo((50, 40)))
    assert np.array_equal(decode_case("photo.tiff", 40, 50).pixels, expected)


def test_formats_outside_the_list_are_never_parsed():
    """Pillow on its own would open the DOS EPS (and hand it to Ghostscript on load)."""
    assert Image.open(io.BytesIO(bad_images.dos_eps())).format == "EPS"
    with pytest.raises(UndecodableImage, match="unrecognised image format"):
        decode_image(bad_images.dos_eps(), 8, 8, 3, **LIMITS)


def test_png_text_chunk_bomb_is_refused_while_reading_the_header():
    data = bad_images.text_bomb_png()
    assert len(data) < 30_000  # 20 MB once inflated
    with pytest.raises(UndecodableImage, match="^unreadable image header: ValueError: "
                                               "Decompressed data too large"):
        decode_image(data, 8, 8, 1, **LIMITS)


@pytest.mark.parametrize("data, reason", [
    (b"\xef\xbb\xbfplain text with a byte-order mark\r\n", "not an image: text"),
    (b"  <HTML><BODY>Access Denied</BODY></HTML>", "not an image: HTML document"),
    ("é".encode() * 600, "not an image: text"),  # a character cut at the sniffed length
    (b"\x00\x01\x02binary", "unrecognised image format (this job reads BMP, GIF, JPEG, PNG, "
                            "TIFF, WEBP)"),
    (b"text then \xff\xfe invalid UTF-8", "unrecognised image format (this job reads BMP, "
                                          "GIF, JPEG, PNG, TIFF, WEBP)"),
])
def test_unrecognised_reason(data, reason):
    assert unrecognised_reason(data) == reason


def test_byte_limit_is_checked_before_opening():
    with pytest.raises(UndecodableImage, match="^object is 10 bytes, over the limit of 9$"):
        decode_image(b"not opened", 8, 8, 1, max_bytes=9, max_pixels=10**9)


def test_pixel_limit_is_checked_before_decoding():
    data = bad_images.encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(UndecodableImage, match="image is 300x200 pixels, over the limit of 59999"):
        decode_image(data, 8, 8, 1, max_bytes=10**7, max_pixels=59_999)

