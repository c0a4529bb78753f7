import io

import numpy as np
import pytest
from PIL import Image

from imagegraph.decode import UndecodableImage, decode_image

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import skimage.data
    return Image.fromarray(skimage.data.astronaut())  # 512x512 RGB


def test_jpeg_to_rgb_at_target_size(photo):
    image = decode_image(encode(photo, "JPEG"), 24, 32, 3, **LIMITS)
    assert image.pixels.shape == (24, 32, 3) and image.pixels.dtype == np.uint8
    assert (image.width, image.height, image.format) == (512, 512, "JPEG")


def test_png_to_grayscale(photo):
    image = decode_image(encode(photo, "PNG"), 16, 16, 1, **LIMITS)
    assert image.pixels.shape == (16, 16, 1)
    assert image.format == "PNG"


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image = decode_image(encode(rgba, "PNG"), 8, 8, 3, **LIMITS)
    assert image.pixels[0, 0].tolist() == [255, 255, 255]


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.full((4, 4), 32768, dtype=np.uint16)
    image = decode_image(encode(Image.fromarray(values), "PNG"), 4, 4, 1, **LIMITS)
    assert image.pixels[0, 0, 0] == 128


def test_cmyk_jpeg_converts_to_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    image = decode_image(encode(cmyk, "JPEG"), 8, 8, 3, **LIMITS)
    red, green, blue = image.pixels[4, 4].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image = decode_image(encode(wide, "JPEG", exif=exif.tobytes()), 8, 8, 3, **LIMITS)
    assert (image.width, image.height) == (40, 20)  # as stored
    assert image.pixels.shape == (8, 8, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty object (0 bytes)"),
    (b"this is text, not a JPEG", "not a recognised image format"),
    (b"<html><body>503 Service Unavailable</body></html>", "not a recognised image format"),
])
def test_non_images_have_reasons(data, reason):
    with pytest.raises(UndecodableImage) as error:
        decode_image(data, 8, 8, 3, **LIMITS)
    assert error.value.reason == reason


def test_truncated_png_is_corrupt(photo):
    data = encode(photo, "PNG")
    with pytest.raises(UndecodableImage, match="corrupt or truncated PNG data"):
        decode_image(data[: len(data) // 2], 8, 8, 3, **LIMITS)


def test_byte_limit(photo):
    data = encode(photo, "PNG")
    with pytest.raises(UndecodableImage, match=f"object is {len(data)} bytes, over the limit"):
        decode_image(data, 8, 8, 3, max_bytes=len(data) - 1, max_pixels=10**9)


def test_pixel_limit_is_checked_before_decoding():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(UndecodableImage, match="image is 300x200 pixels, over the limit of 59999"):
        decode_image(data, 8, 8, 1, max_bytes=10**7, max_pixels=59_999)
