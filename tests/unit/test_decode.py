import io
import json
import struct
import subprocess
import sys
import zlib

import bad_images
import cv2
import numpy as np
import pytest
import simplejpeg
from bad_images import BLUE, GRID_COLOURS, GRID_TILE, RED, WHITE, Classified, DeadLettered
from PIL import Image, ImageFile, ImageOps

from imagegraph.dead_letters import TRANSIENT, retry_class
from imagegraph.imaging import libheif
from imagegraph.imaging.decode import (
    DecoderOutOfMemory,
    UndecodableImage,
    _out_of_memory,
    decode_image,
    is_out_of_memory,
    unrecognised_reason,
)

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}
CORPUS_BYTES, CORPUS_PIXELS = 100_000, 1_000_000
CORPUS = {case.key: case for case in bad_images.corpus(CORPUS_BYTES, CORPUS_PIXELS)}


UNRECOGNISED = ("unrecognised image format (this job reads AVIF, BMP, GIF, HEIF, JPEG, PNG, TIFF, "
                "WEBP)")

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


def test_grayscale_is_the_luma_of_all_three_channels(photo):
    """At its own size (no resampling) a PNG's grayscale pixels are Pillow's ITU-R 601-2 luma,
    L = (299 R + 587 G + 114 B) / 1000: pure red, green and blue are 76, 150 and 29, not one
    channel of them."""
    primaries = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8))
    image = decode_image(bad_images.encode(primaries, "PNG"), 1, 3, 1, **LIMITS)
    assert image.pixels[0, :, 0].tolist() == [76, 150, 29]
    gray = decode_image(bad_images.encode(photo, "PNG"), 512, 512, 1, **LIMITS).pixels
    assert np.array_equal(gray[:, :, 0], np.asarray(photo.convert("L")))


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


def record_libjpeg_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The (height, width) of every image libjpeg-turbo decodes from now on in the test."""
    sizes = []
    decode_jpeg = simplejpeg.decode_jpeg

    def recording(*args, **kwargs):
        pixels = decode_jpeg(*args, **kwargs)
        sizes.append(pixels.shape[:2])
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", recording)
    return sizes


@pytest.mark.parametrize("target, decoded", [(64, 64), (100, 128), (120, 128), (256, 256),
                                             (300, 512)])
def test_jpeg_is_scaled_in_the_dct_to_the_smallest_size_not_below_the_target(
        photo, monkeypatch, target, decoded):
    sizes = record_libjpeg_sizes(monkeypatch)
    image = decode_image(bad_images.encode(photo, "JPEG"), target, target, 3, **LIMITS)
    assert sizes == [(decoded, decoded)]
    assert image.pixels.shape == (target, target, 3)


def test_jpeg_dct_scale_counts_the_scaled_size_rounded_up(monkeypatch):
    """A 100x100 JPEG at a target of 13x13: libjpeg-turbo's 1/8 scale rounds 12.5 up to 13,
    which is the target, so that scale is used."""
    sizes = record_libjpeg_sizes(monkeypatch)
    data = bad_images.encode(bad_images.photo((100, 100)), "JPEG", quality=90)
    assert decode_image(data, 13, 13, 3, **LIMITS).pixels.shape == (13, 13, 3)
    assert sizes == [(13, 13)]


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
    for target, channels in (((32, 32), 3), ((24, 40), 3), ((24, 40), 1), ((130, 20), 1)):
        assert np.array_equal(decode_image(padded, *target, channels, **LIMITS).pixels,
                              decode_image(data, *target, channels, **LIMITS).pixels)


def test_shrinking_averages_pixels_instead_of_skipping_them():
    """One-pixel black and white columns, 8 times the target's width: each output pixel is
    their mean (plain bilinear would sample two columns of the same colour)."""
    stripes = np.zeros((32, 128), np.uint8)
    stripes[:, 1::2] = 255
    image = decode_image(bad_images.encode(Image.fromarray(stripes), "PNG"), 4, 16, 1,
                         **LIMITS)
    assert np.abs(image.pixels.astype(int) - 128).max() <= 1


@pytest.mark.parametrize("transposed", [False, True])
def test_a_shrink_by_between_two_and_three_times_halves_first(transposed):
    """One-pixel black and white columns (or, transposed, rows) of 50 x 50 pixels shrunk to
    20 x 20: halved to 25 first (each pixel the mean of a pair), then resized; one bilinear
    resize from 50 would read the stripes unevenly (levels 64 to 191)."""
    stripes = np.zeros((50, 50), np.uint8)
    stripes[:, 1::2] = 255
    stripes = stripes.T if transposed else stripes
    image = decode_image(bad_images.encode(Image.fromarray(stripes), "PNG"), 20, 20, 1,
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


def test_a_palette_tiff_with_alpha_is_composited_on_white():
    """A TIFF that Pillow opens in mode PA (palette indices and alpha): red, transparent on
    the left half, blue, opaque on the right."""
    indices = np.zeros((8, 16), np.uint8)
    indices[:, 8:] = 1
    alpha = np.zeros((8, 16), np.uint8)
    alpha[:, 8:] = 255
    image = Image.fromarray(np.stack([indices, alpha], axis=2), "PA")
    image.putpalette([*RED, *BLUE])
    data = bad_images.encode(image, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "PA"
    pixels = decode_image(data, 8, 16, 3, **LIMITS).pixels
    assert (pixels[4, 2].tolist(), pixels[4, 12].tolist()) == (list(WHITE), list(BLUE))


def test_animated_gif_uses_its_first_frame():
    image = decode_case("animated.gif", 20, 30)
    assert {tuple(p) for p in image.pixels.reshape(-1, 3).tolist()} == {RED}


def test_a_jpeg_pillow_decodes_is_scaled_in_the_dct_by_its_width_and_height():
    """A CMYK photo JPEG (which libjpeg-turbo's path leaves to Pillow) of 160x40 at a target
    of 10x40 (height x width): Pillow's draft mode decodes it at 1/4, 40x10, the target
    itself; the draft size given as (height, width) would decode it whole and resize."""
    data = bad_images.encode(bad_images.photo((160, 40)).convert("CMYK"), "JPEG", quality=90)
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (40, 10))
    assert drafted.size == (40, 10)
    pixels = decode_image(data, 10, 40, 3, **LIMITS).pixels
    assert np.array_equal(pixels, np.asarray(drafted.convert("RGB")))


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


def test_heic_decodes_with_its_rotation_applied_once():
    assert decode_case("halves.heic", 24, 36).pixels[12, 4].tolist() == pytest.approx(
        list(RED), abs=12)
    pixels = decode_case("exif-rotated.heic", 40, 20).pixels  # stored 40x20, shown 20x40
    assert pixels[5, 10, 0] < 30 and pixels[35, 10, 0] > 225


def test_avif_decodes_with_its_rotation_applied_once():
    """Stored 40x20, black left half, EXIF orientation 6 written as the file's rotation: shown
    20 wide, 40 tall, black on top."""
    assert decode_case("halves.avif", 24, 36).pixels[12, 4].tolist() == pytest.approx(
        list(RED), abs=12)
    image = decode_case("exif-rotated.avif", 40, 20)
    assert (image.width, image.height, image.format) == (20, 40, "AVIF")
    assert image.pixels[5, 10, 0] < 30 and image.pixels[35, 10, 0] > 225


def test_a_grid_heic_decodes_its_tiles_in_place_turned_once():
    """grid.heic: 2 x 3 tiles of 64 x 64, each its own colour, stored 192 x 128 with the grid
    turned 90 degrees clockwise (irot) and EXIF orientation 6 beside it. At 6 x 4 (height x
    width) each displayed tile is 2 x 2 pixels of its colour, within HEVC's error: the stored
    rows turned clockwise, the bottom-left tile at the top left. A tile out of place, missing,
    or turned again by the EXIF orientation gives another colour there."""
    image = decode_case("grid.heic", 6, 4)
    assert (image.width, image.height, image.format) == (128, 192, "HEIF")
    shown = np.rot90(np.array(GRID_COLOURS), -1)  # (3, 2, 3): tiles as displayed
    expected = np.repeat(np.repeat(shown, 2, axis=0), 2, axis=1)
    assert np.abs(image.pixels.astype(int) - expected).max() <= 4


def test_a_grid_heic_is_refused_by_the_whole_grids_pixels_before_decoding():
    """grid.heic is 128 x 192 = 24576 pixels in 6 tiles of 4096. With its tiles' HEVC data
    zeroed (libheif writes them first in the `mdat` box, then the EXIF) its header still
    declares the grid: over the limit by one pixel it is refused as any image is; at the limit
    it is decoded, and libheif finds no picture in the tiles."""
    data = CORPUS["grid.heic"].data
    tiles = data.index(b"mdat") + 4
    exif = data.index(b"Exif\x00\x00MM") - 4  # the item starts with the TIFF header's offset
    assert exif - tiles > 6 * 16
    header_only = data[:tiles] + bytes(exif - tiles) + data[exif:]
    for grid in (data, header_only):
        with pytest.raises(UndecodableImage) as error:
            decode_image(grid, 6, 4, 3, max_bytes=10**7, max_pixels=24_575)
        assert error.value.reason == "image is 128x192 pixels, over the limit of 24575 pixels"
    assert decode_image(data, 6, 4, 3, max_bytes=10**7, max_pixels=24_576).width == 128
    with pytest.raises(UndecodableImage, match="^corrupt or truncated HEIF data: "):
        decode_image(header_only, 6, 4, 3, max_bytes=10**7, max_pixels=24_576)
    assert GRID_TILE**2 * 6 == 24_576


@pytest.mark.parametrize("ispe, pillows, limit, counted", [
    ((64, 64), (64, 64), 10_000, "128x192"),      # understated: libheif's grid counts
    ((192, 160), (160, 192), 25_000, "160x192"),  # overstated: Pillow's size counts
    ((128, 192), (192, 128), 24_575, "192x128"),  # as many pixels: Pillow's size is named
])
def test_a_grid_heic_is_limited_by_the_larger_of_its_ispe_and_its_grid(ispe, pillows, limit,
                                                                          counted):
    """grid.heic (a 128 x 192 grid as shown) with its grid's `ispe` (192 x 128 stored, before
    the rotation) rewritten to `ispe`: Pillow reports `pillows`, libheif decodes the grid its
    descriptor declares (pillow-heif crops it to a smaller `ispe`). The limit counts the larger
    of the two, before decoding."""
    data = CORPUS["grid.heic"].data
    stored = b"ispe" + bytes(4) + struct.pack(">II", 192, 128)  # version and flags, the size
    assert data.count(stored) == 1
    rewritten = data.replace(stored, b"ispe" + bytes(4) + struct.pack(">II", *ispe))
    assert Image.open(io.BytesIO(rewritten)).size == pillows
    assert libheif.decoded_size(rewritten) == (128, 192)
    with pytest.raises(UndecodableImage) as error:
        decode_image(rewritten, 6, 4, 3, max_bytes=10**7, max_pixels=limit)
    assert error.value.reason == f"image is {counted} pixels, over the limit of {limit} pixels"


def lossless_decode(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """What `decode_image` makes of `pixels` (uint8 RGB) stored losslessly, as PNG."""
    return decode_image(bad_images.encode(Image.fromarray(pixels), "PNG"), height, width, 3,
                        **LIMITS).pixels


def test_a_heic_thumbnail_at_least_the_target_is_decoded_instead_of_the_photo():
    """thumbnail.heic: a 240x320 photo (as shown) and its 48x64 thumbnail. At 32x32 the
    thumbnail is decoded, turned as the photo is; its pixels are the thumbnail's, 8 levels of
    255 from the photo's on average (each is its own lossy encoding, and 32x32 from 48x64
    aliases), where turned upside down they would be 64 away; the size is the photo's."""
    data = CORPUS["thumbnail.heic"].data
    thumbnail = libheif.thumbnail(data, 32, 32)
    assert thumbnail.shape == (64, 48, 3)
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    image = decode_case("thumbnail.heic", 32, 32)
    assert (image.width, image.height, image.format) == (240, 320, "HEIF")
    assert np.array_equal(image.pixels, lossless_decode(thumbnail, 32, 32))
    from_photo = lossless_decode(photo, 32, 32).astype(int)
    assert 0 < np.abs(image.pixels.astype(int) - from_photo).mean() < 12


@pytest.mark.parametrize("height, width", [(65, 32), (32, 49), (64, 64)])
def test_a_heic_thumbnail_smaller_than_the_target_is_not_used(height, width):
    """The 48x64 thumbnail is short of each of these targets on one side: the photo is
    decoded."""
    data = CORPUS["thumbnail.heic"].data
    assert libheif.thumbnail(data, height, width) is None
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_case("thumbnail.heic", height, width).pixels,
                          lossless_decode(photo, height, width))


def test_a_grayscale_heic_thumbnail_is_decoded_instead_of_the_photo():
    """A grayscale HEIC (Pillow mode L) of 64x48 with a 40x30 thumbnail: at 16x16 its
    thumbnail is decoded, as an RGB one's is; the photo would give other pixels."""
    data = bad_images.encode(bad_images.photo((64, 48)).convert("L"), "HEIF", quality=75,
                             thumbnails=[40])
    assert Image.open(io.BytesIO(data)).mode == "L"
    thumbnail = libheif.thumbnail(data, 16, 16)
    assert thumbnail.shape == (30, 40, 3)
    pixels = decode_image(data, 16, 16, 3, **LIMITS).pixels
    assert np.array_equal(pixels, lossless_decode(thumbnail, 16, 16))
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert not np.array_equal(pixels, lossless_decode(photo, 16, 16))


def test_a_heic_with_alpha_is_composited_on_white_not_read_from_its_thumbnail():
    """A 64x48 RGBA HEIC, its left half transparent red, its right half opaque blue, with a
    32x24 thumbnail: libheif's thumbnail decode drops alpha (red on the left), so the photo is
    decoded and composited: white on the left."""
    rgba = bad_images.halves((64, 48), (*RED, 0), (*BLUE, 255), mode="RGBA")
    data = bad_images.encode(rgba, "HEIF", quality=90, thumbnails=[32])
    assert libheif.thumbnail(data, 12, 16)[12, 4].tolist() == pytest.approx(list(RED), abs=8)
    pixels = decode_image(data, 12, 16, 3, **LIMITS).pixels
    assert pixels[6, 2].tolist() == pytest.approx(list(WHITE), abs=8)
    assert pixels[6, 13].tolist() == pytest.approx(list(BLUE), abs=8)


def test_without_a_bundled_libheif_the_photo_is_decoded_whole(monkeypatch):
    """Where pillow-heif's wheel bundles no libheif (a macOS wheel, a source build), no
    thumbnail is read and the photo decodes as before."""
    monkeypatch.setattr(libheif, "_LIBHEIF", None)
    data = CORPUS["thumbnail.heic"].data
    assert libheif.thumbnail(data, 32, 32) is None
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_case("thumbnail.heic", 32, 32).pixels,
                          lossless_decode(photo, 32, 32))


def failing_thumbnail_decode(monkeypatch, code: int, message: bytes) -> None:
    """From now on in the test, libheif answers every thumbnail decode with this error."""
    def failing(handle):
        raise libheif._LibheifError(libheif._Error(code=code, message=message))

    monkeypatch.setattr(libheif, "_decode_rgb", failing)


def test_libheif_out_of_memory_on_a_thumbnail_is_a_transient_dead_letter(monkeypatch):
    failing_thumbnail_decode(monkeypatch, 6, b"Memory allocation error")  # heif_error_code 6
    with pytest.raises(DecoderOutOfMemory) as error:
        decode_case("thumbnail.heic", 32, 32)
    assert error.value.reason == ("out of memory while decoding: MemoryError: libheif: "
                                  "Memory allocation error")
    assert retry_class(error.value.reason) == TRANSIENT


def test_a_thumbnail_libheif_cannot_decode_leaves_the_photo_to_decode(monkeypatch):
    failing_thumbnail_decode(monkeypatch, 7, b"Decoder plugin generated an error")
    data = CORPUS["thumbnail.heic"].data
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode_case("thumbnail.heic", 32, 32).pixels,
                          lossless_decode(photo, 32, 32))


def test_no_thumbnail_is_taken_from_a_heic_without_one_or_from_bytes_libheif_cannot_read():
    assert libheif.thumbnail(CORPUS["halves.heic"].data, 1, 1) is None
    assert libheif.thumbnail(b"not a heif file", 1, 1) is None
    assert libheif.thumbnail(CORPUS["thumbnail.heic"].data[:2000], 1, 1) is None


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
    (b"\x00\x01\x02binary", UNRECOGNISED),
    (b"text then \xff\xfe invalid UTF-8", UNRECOGNISED),
])
def test_unrecognised_reason(data, reason):
    assert unrecognised_reason(data) == reason


def test_byte_limit_is_checked_before_opening():
    with pytest.raises(UndecodableImage, match="^object is 10 bytes, over the limit of 9$"):
        decode_image(b"not opened", 8, 8, 1, max_bytes=9, max_pixels=10**9)


def test_pixel_limit_is_checked_before_decoding():
    """A PNG whose header declares 300x200 pixels and holds no pixel data: checked before
    decoding, it is over the limit; decoded first, it would be corrupt."""
    whole = bad_images.encode(Image.new("L", (300, 200)), "PNG")
    header_only = whole[:33] + whole[-12:]  # signature, IHDR, IEND: no IDAT
    with pytest.raises(UndecodableImage, match="image is 300x200 pixels, over the limit of 59999"):
        decode_image(header_only, 8, 8, 1, max_bytes=10**7, max_pixels=59_999)
    with pytest.raises(UndecodableImage, match="corrupt or truncated PNG data"):
        decode_image(header_only, 8, 8, 1, max_bytes=10**7, max_pixels=60_000)



def blank_png(side: int) -> bytes:
    """A valid all-black 8-bit grayscale PNG of side x side pixels, built a row at a time (a
    few hundred kB for side**2 bytes of pixels)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))

    deflate, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the pixels
    pixels = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) +
            chunk(b"IEND", b""))


# Decodes the object at argv[1], first with decode_image, then as the UDF does
# (prepare_object), after capping this process's address space at what it uses plus argv[2]
# bytes (none: no cap); prints what each said.
_DECODE_UNDER_MEMORY_CAP = """
import json, resource, sys
from imagegraph.config import S3Config
from imagegraph.imaging.decode import DecoderOutOfMemory, UndecodableImage, decode_image
from imagegraph.infer.classify import InferenceSettings, prepare_object
from imagegraph.model.artifact import ModelMetadata
from imagegraph.storage.object_reader import ReaderSettings

path, headroom = sys.argv[1], sys.argv[2]
metadata = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b"))
settings = InferenceSettings(top_k=1, batch_size=1, max_image_pixels=10**9, threads=1,
                             reader=ReaderSettings.from_config(S3Config(), 1, 10**8))
data = open(path, "rb").read()
if headroom != "none":
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + int(headroom), resource.RLIM_INFINITY))
try:
    decoded = list(decode_image(data, 8, 8, 1, 10**8, 10**9).pixels.shape)
except (UndecodableImage, DecoderOutOfMemory) as exc:
    decoded = [type(exc).__name__, exc.reason]
row, _ = prepare_object("file://" + path, None, metadata, settings)
print(json.dumps({"decode_image": decoded,
                  "prepare_object": [row[k] for k in ("status", "stage", "reason")]}))
"""


def decode_under_memory_cap(path, headroom: int | None) -> dict:
    result = subprocess.run([sys.executable, "-c", _DECODE_UNDER_MEMORY_CAP, str(path),
                             str(headroom) if headroom else "none"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_valid_image_in_a_worker_out_of_memory_is_dead_lettered_as_transient(tmp_path):
    """A real MemoryError: a 16384x16384 PNG (256 MiB of pixels) decoded in a process whose
    address space is capped at 128 MiB over what it uses, so that Pillow cannot allocate the
    image. The same bytes decode without the cap: the failure is the worker's, and a later
    run may classify the object (its reason's retry class is transient), unlike bytes that are
    bad."""
    path = tmp_path / "large.png"
    path.write_bytes(blank_png(16384))
    assert decode_under_memory_cap(path, None) == {
        "decode_image": [8, 8, 1], "prepare_object": ["ok", None, None]}
    capped = decode_under_memory_cap(path, 128 * 2**20)
    kind, reason = capped["decode_image"]
    assert kind == "DecoderOutOfMemory"
    assert reason.startswith("out of memory while decoding: MemoryError")
    assert capped["prepare_object"][:2] == ["failed", "decode"]
    assert capped["prepare_object"][2].startswith("out of memory while decoding: MemoryError")
    assert retry_class(capped["prepare_object"][2]) == TRANSIENT


def test_out_of_memory_as_each_decoding_library_reports_it():
    """OpenCV's failed allocation is real (a resize to 1.6 GB with 256 MiB of address space
    left, in a process of its own); Pillow's codec error is built by Pillow's own function."""
    capped_resize = subprocess.run([sys.executable, "-c", """
import resource, cv2, numpy as np
from imagegraph.imaging.decode import is_out_of_memory
with open("/proc/self/status") as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (used + 2**28, resource.RLIM_INFINITY))
try:
    cv2.resize(np.zeros((10, 10), np.uint8), (40000, 40000))
except cv2.error as exc:
    print(exc.code, is_out_of_memory(exc))
"""], capture_output=True, text=True, timeout=60)
    assert capped_resize.stdout.split() == [str(cv2.Error.StsNoMem), "True"], \
        capped_resize.stderr
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(np.core._exceptions._ArrayMemoryError((10**12,), np.dtype("u1")))
    assert is_out_of_memory(ImageFile._get_oserror(-9, encoder=False))  # a codec's malloc
    assert not is_out_of_memory(ImageFile._get_oserror(-2, encoder=False))  # bad data
    assert not is_out_of_memory(OSError("Truncated File Read"))
    no_memory = cv2.error("OpenCV(4.10.0) alloc.cpp:73: error: (-4:Insufficient memory) "
                          "Failed to allocate 9 bytes in function 'OutOfMemoryError'\n")
    with pytest.raises(cv2.error) as resize_error:
        cv2.resize(np.zeros((0, 0), np.uint8), (8, 8))  # an OpenCV error that is not memory
    assert not is_out_of_memory(resize_error.value)
    # each error by its own message: OpenCV sets `code` on the error type, for the last raised
    assert is_out_of_memory(no_memory) and cv2.error.code != cv2.Error.StsNoMem
    assert _out_of_memory(no_memory).reason == (
        "out of memory while decoding: OpenCV: Failed to allocate 9 bytes")


def test_the_channel_count_and_the_byte_limit_bounds():
    data = bad_images.encode(Image.new("L", (4, 4)), "PNG")
    with pytest.raises(ValueError, match="^channels must be 1 or 3, got 2$"):
        decode_image(data, 4, 4, 2, **LIMITS)
    assert decode_image(data, 4, 4, 1, max_bytes=len(data), max_pixels=16).width == 4


@pytest.mark.parametrize("mode, values, gray", [
    ("F", [-1.0, 0.5, 2.0, 1.004], [0, 128, 255, 255]),         # clipped to 0..255
    ("I;16", [0, 25700, 51400, 65535], [0, 100, 200, 255]),      # 255 / 65535 a level
    ("LA", [(0, 128), (0, 0), (0, 255), (200, 255)], [127, 255, 0, 200]),  # on white
])
def test_high_bit_depth_and_alpha_levels(mode, values, gray):
    """Decoded at its own size: each level exactly (TIFF keeps F and I;16, PNG keeps LA)."""
    image = Image.new(mode, (4, 1))
    image.putdata(values)
    data = bad_images.encode(image, "PNG" if mode == "LA" else "TIFF")
    assert decode_image(data, 1, 4, 1, **LIMITS).pixels[0, :, 0].tolist() == gray


@pytest.mark.parametrize("data, reason", [
    (b"hello\xff", UNRECOGNISED),
    (b"abc" + b"\x00" * 1021, UNRECOGNISED),
    (b"a" * 1020 + b"\x00bcd", UNRECOGNISED),
    (b"a" * 1022 + "é".encode(), "not an image: text"),   # cut inside its last character
    (b"<!DOCTYPE html><p>Not found</p>", "not an image: HTML document"),
])
def test_what_unrecognised_bytes_look_like(data, reason):
    assert unrecognised_reason(data) == reason


@pytest.mark.parametrize("stored, target, orientation, decoded", [
    ((512, 256), (256, 128), 1, [(256, 512)]),   # (width, height); target (height, width)
    ((512, 256), (256, 128), 6, [(128, 256)]),   # displayed turned: 256 wide, 512 high
    ((512, 512), (64, 256), 1, [(256, 256)]),    # the wider side decides
    ((2, 100), (40, 1), 1, [(50, 1)]),           # strips: at 1/8 one side alone would do,
    ((100, 2), (1, 40), 1, [(1, 50)]),           # the other needs 1/2
])
def test_jpeg_dct_scale_follows_the_displayed_target(monkeypatch, stored, target, orientation,
                                                      decoded):
    sizes = record_libjpeg_sizes(monkeypatch)
    exif = Image.Exif()
    exif[bad_images.ORIENTATION] = orientation
    data = bad_images.encode(Image.new("RGB", stored, (200, 30, 30)), "JPEG",
                             exif=exif.tobytes())
    image = decode_image(data, *target, 3, **LIMITS)
    assert sizes == decoded and image.pixels.shape == (*target, 3)


def test_libjpeg_turbo_decodes_grayscale_jpegs_and_only_jpegs(monkeypatch):
    colourspaces = []
    decode_jpeg = simplejpeg.decode_jpeg

    def recording(data, **kwargs):
        colourspaces.append(kwargs["colorspace"])
        return decode_jpeg(data, **kwargs)

    monkeypatch.setattr(simplejpeg, "decode_jpeg", recording)
    gray = Image.new("L", (16, 16), 90)
    for fmt in ("PNG", "BMP", "TIFF"):
        decode_image(bad_images.encode(gray, fmt), 8, 8, 1, **LIMITS)
    assert colourspaces == []
    decode_image(bad_images.encode(gray, "JPEG"), 8, 8, 1, **LIMITS)
    decode_image(bad_images.encode(gray, "JPEG"), 8, 8, 3, **LIMITS)
    assert colourspaces == ["GRAY", "RGB"]


def test_an_allocation_failure_is_out_of_memory_not_the_objects_fault(monkeypatch):
    from imagegraph.imaging import decode
    data = bad_images.encode(Image.new("RGB", (16, 16)), "PNG")

    def no_memory(*args, **kwargs):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(decode, "_resize", no_memory)
    with pytest.raises(decode.DecoderOutOfMemory) as error:
        decode_image(data, 8, 8, 3, **LIMITS)
    assert error.value.reason == "out of memory while decoding: MemoryError: cannot allocate"
    assert str(error.value) == error.value.reason
    monkeypatch.setattr(Image, "open", no_memory)
    with pytest.raises(decode.DecoderOutOfMemory) as error:
        decode_image(data, 8, 8, 3, **LIMITS)
    assert error.value.reason == "out of memory while decoding: MemoryError: cannot allocate"


def test_a_shrink_by_exactly_two_is_each_blocks_mean_rounded_once():
    """64x48 of noise to 32x24: each pixel is the mean of its 2x2 block, rounded half up
    once; averaging one axis, rounding, then the other would be a level off in places."""
    noise = np.random.default_rng(7).integers(0, 256, (64, 48), dtype=np.uint8)
    image = decode_image(bad_images.encode(Image.fromarray(noise), "PNG"), 32, 24, 1, **LIMITS)
    sums = noise.astype(int).reshape(32, 2, 24, 2).sum(axis=(1, 3))
    assert np.array_equal(image.pixels[:, :, 0], (sums + 2) // 4)


def test_shrinking_by_a_power_of_two_is_a_box_average():
    """Halving until the target is a mean over whole 8x8 blocks of noise, as an area resize
    is (within rounding); one bilinear resize would read 2x2 of each 8x8 block."""
    noise = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)
    image = decode_image(bad_images.encode(Image.fromarray(noise), "PNG"), 8, 8, 1, **LIMITS)
    area = cv2.resize(noise, (8, 8), interpolation=cv2.INTER_AREA)
    assert np.abs(image.pixels[:, :, 0].astype(int) - area).max() <= 2


def record_calls(monkeypatch, module, name: str) -> list:
    """What `module.name` returns from now on in the test, a call at a time (the exception,
    re-raised, where it raises)."""
    calls = []
    function = getattr(module, name)

    def recording(*args, **kwargs):
        try:
            calls.append(function(*args, **kwargs))
        except Exception as exc:
            calls.append(exc)
            raise
        return calls[-1]

    monkeypatch.setattr(module, name, recording)
    return calls


def png_of_mode(mode: str) -> bytes:
    """A 40x30 PNG of a photo in Pillow `mode`; RGBA and LA with an alpha ramp from 0 to 255,
    P without and PT with a transparent palette entry."""
    image = bad_images.photo((40, 30))
    alpha = Image.fromarray(np.linspace(0, 255, 40 * 30).astype(np.uint8).reshape(30, 40))
    if mode in ("RGBA", "LA"):
        image = image.convert(mode[0] if mode == "LA" else "RGB")
        image.putalpha(alpha)
        return bad_images.encode(image, "PNG")
    if mode in ("P", "PT"):
        image = image.quantize(16)
        return bad_images.encode(image, "PNG", **({"transparency": 3} if mode == "PT" else {}))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return bad_images.encode(image.convert(mode) if mode != "I;16" else image, "PNG")


@pytest.mark.parametrize("mode, by_libspng", [
    ("L", True), ("RGB", True), ("RGBA", True),              # 8 bits a sample
    ("P", False), ("PT", False), ("LA", False), ("I;16", False), ("1", False),
])
def test_8_bit_gray_rgb_and_rgba_pngs_go_to_libspng_and_decode_as_pillow_does(
        monkeypatch, mode, by_libspng):
    """At its own size (no resampling), for both channel counts, the pixels equal Pillow's
    decoding and conversion (alpha composited onto white, 16 bits scaled); libspng decodes
    only the PNGs it decodes as Pillow does, the others stay with Pillow."""
    import pyspng

    data = png_of_mode(mode)
    calls = record_calls(monkeypatch, pyspng, "load")
    from imagegraph.imaging.decode import _to_8bit
    for channels in (1, 3):
        pillows = np.asarray(_to_8bit(Image.open(io.BytesIO(data)), channels))
        pixels = decode_image(data, 30, 40, channels, **LIMITS).pixels
        assert np.array_equal(pixels, pillows.reshape(30, 40, channels))
    assert len(calls) == (2 if by_libspng else 0)


@pytest.mark.parametrize("key, by_libspng", [
    ("interlaced-rgb.png", True), ("interlaced-rgba.png", True), ("interlaced-rgb16.png", False),
])
def test_an_interlaced_png_decodes_to_the_pixels_of_the_same_png_not_interlaced(
        monkeypatch, key, by_libspng):
    """Adam7-interlaced PNGs written by pypng, 45 x 29, decoded at their own size (no
    resampling) with 1 and 3 channels: the pixels of the same pixels written not interlaced.
    8-bit RGB and RGBA go to libspng (which decodes them, no fallback to Pillow), 16-bit RGB to
    Pillow; the 8-bit RGB photo's pixels are the source's exactly."""
    import pyspng

    source = bad_images.interlaced_sources()[key]
    plain = bad_images.pypng_png(source, interlace=False)
    assert (CORPUS[key].data[28], plain[28]) == (1, 0)  # IHDR's interlace method
    calls = record_calls(monkeypatch, pyspng, "load")
    for channels in (1, 3):
        pixels = decode_case(key, 29, 45, channels).pixels
        assert np.array_equal(pixels, decode_image(plain, 29, 45, channels,
                                                   **LIMITS).pixels)
    assert [type(call) for call in calls] == [np.ndarray] * (4 if by_libspng else 0)
    if key == "interlaced-rgb.png":
        assert np.array_equal(decode_case(key, 29, 45).pixels, source)


def test_a_truncated_png_libspng_refuses_is_dead_lettered_as_pillow_words_it(monkeypatch):
    import pyspng

    calls = record_calls(monkeypatch, pyspng, "load")
    with pytest.raises(UndecodableImage) as error:
        decode_case("truncated.png", 32, 32)
    assert error.value.reason == "corrupt or truncated PNG data: OSError: image file is truncated"
    assert [type(call) for call in calls] == [RuntimeError]


def test_a_png_over_the_pixel_limit_never_reaches_libspng(monkeypatch):
    import pyspng

    calls = record_calls(monkeypatch, pyspng, "load")
    data = bad_images.encode(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(UndecodableImage, match="image is 300x200 pixels, over the limit"):
        decode_image(data, 8, 8, 3, max_bytes=10**7, max_pixels=59_999)
    assert calls == []
    decode_image(data, 8, 8, 3, max_bytes=10**7, max_pixels=60_000)
    assert len(calls) == 1


def test_libspng_out_of_memory_is_a_transient_dead_letter(monkeypatch):
    import pyspng

    def no_memory(data):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(pyspng, "load", no_memory)
    with pytest.raises(DecoderOutOfMemory) as error:
        decode_image(bad_images.encode(Image.new("RGB", (16, 16)), "PNG"), 8, 8, 3, **LIMITS)
    assert error.value.reason == "out of memory while decoding: MemoryError: std::bad_alloc"
    assert retry_class(error.value.reason) == TRANSIENT


def webp(image: Image.Image, **options) -> bytes:
    return bad_images.encode(image, "WEBP", lossless=True, **options)


def test_a_still_webp_without_alpha_goes_to_opencv_and_decodes_as_pillow_does(monkeypatch):
    """Lossless, at its own size: both decoders are libwebp, the pixels are equal."""
    data = webp(bad_images.photo((40, 30)))
    calls = record_calls(monkeypatch, cv2, "imdecode")
    from imagegraph.imaging.decode import _to_8bit
    for channels in (1, 3):
        pillows = np.asarray(_to_8bit(Image.open(io.BytesIO(data)), channels))
        pixels = decode_image(data, 30, 40, channels, **LIMITS).pixels
        assert np.array_equal(pixels, pillows.reshape(30, 40, channels))
    assert len(calls) == 2


def test_a_webp_with_alpha_or_animated_stays_with_pillow(monkeypatch):
    calls = record_calls(monkeypatch, cv2, "imdecode")
    transparent = webp(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))
    assert decode_image(transparent, 8, 8, 3, **LIMITS).pixels[4, 4].tolist() == list(WHITE)
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    animated = webp(frames[0], save_all=True, append_images=frames[1:], duration=100)
    assert decode_image(animated, 8, 8, 3, **LIMITS).pixels[4, 4].tolist() == list(RED)
    assert calls == []


def test_a_webp_exif_orientation_is_applied_once():
    """Stored 40x20, black left half, EXIF orientation 6: shown 20 wide, 40 tall, black on top
    (OpenCV would turn it too if let)."""
    exif = Image.Exif()
    exif[bad_images.ORIENTATION] = 6
    data = webp(bad_images.halves((40, 20), (0, 0, 0), WHITE), exif=exif.tobytes())
    image = decode_image(data, 40, 20, 1, **LIMITS)
    assert (image.width, image.height) == (20, 40)
    assert image.pixels[5, 10, 0] < 30 and image.pixels[35, 10, 0] > 225


def test_a_truncated_webp_is_refused_by_pillow_before_opencv(monkeypatch):
    """Pillow's WebP reader decodes while it opens: truncated data fails there, as before."""
    data = webp(bad_images.photo((64, 48)))
    calls = record_calls(monkeypatch, cv2, "imdecode")
    with pytest.raises(UndecodableImage) as error:
        decode_image(data[: len(data) // 2], 32, 32, 3, **LIMITS)
    assert error.value.reason == ("unreadable image header: OSError: could not create decoder "
                                  "object")
    assert calls == []


def test_a_webp_opencv_cannot_decode_is_left_to_pillow(monkeypatch):
    data = webp(bad_images.photo((40, 30)))
    expected = decode_image(data, 30, 40, 3, **LIMITS).pixels
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    assert np.array_equal(decode_image(data, 30, 40, 3, **LIMITS).pixels, expected)


def png_with_exif_after_the_pixels(orientation: int) -> bytes:
    """Stored 40x20, black left half, its eXIf chunk (orientation) moved after IDAT, where
    the PNG specification also allows it."""
    exif = Image.Exif()
    exif[bad_images.ORIENTATION] = orientation
    data = bad_images.encode(bad_images.halves((40, 20), (0, 0, 0), WHITE), "PNG",
                             exif=exif.tobytes())
    start = data.index(b"eXIf") - 4
    end = start + 12 + int.from_bytes(data[start:start + 4], "big")
    chunk, rest = data[start:end], data[:start] + data[end:]
    iend = rest.index(b"IEND") - 4
    return rest[:iend] + chunk + rest[iend:]


def test_a_png_orientation_after_the_pixels_is_still_applied():
    image = decode_image(png_with_exif_after_the_pixels(6), 40, 20, 1, **LIMITS)
    assert (image.width, image.height) == (20, 40)
    assert image.pixels[5, 10, 0] < 30 and image.pixels[35, 10, 0] > 225


def test_a_png_without_exif_is_not_decoded_by_pillow_to_look_for_it(monkeypatch):
    """Pillow's `getexif` of a PNG decodes all its pixels unless the EXIF came before them."""
    from PIL import PngImagePlugin

    data = bad_images.encode(bad_images.photo((40, 30)), "PNG")
    loads = record_calls(monkeypatch, PngImagePlugin.PngImageFile, "load")
    decode_image(data, 8, 8, 3, **LIMITS)
    assert loads == []
