"""Image decoding: bytes of an untrusted object -> a fixed-size uint8 pixel array, or a reason.

Pure functions, no Spark and no TensorFlow, so they are unit-tested on their own.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb check is replaced by the configured `max_pixels` check in `decode_image`.
Image.MAX_IMAGE_PIXELS = None

_HIGH_BIT_DEPTH_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0,
                         "I": 65535.0, "F": 1.0}


class UndecodableImage(ValueError):
    """The object is not an image this job can classify; `reason` says why, for dead-letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """`pixels`: uint8 array (height, width, channels) at the model's input size.
    `width`/`height`: the original image's size in pixels; `format`: Pillow's name (PNG, JPEG)."""

    pixels: np.ndarray
    width: int
    height: int
    format: str


def oversize_reason(size: int, max_bytes: int) -> str:
    """The dead-letter reason of an object of `size` bytes over the `max_bytes` limit."""
    return f"object is {size} bytes, over the limit of {max_bytes}"


def decode_image(data: bytes, height: int, width: int, channels: int,
                 max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode `data` and resize it to (height, width) with 1 (grayscale) or 3 (RGB) channels.

    EXIF orientation is applied; palette, alpha, CMYK and 16-bit images are converted to 8-bit
    grayscale or RGB (alpha composited onto white). Raises `UndecodableImage` for empty,
    oversized, unrecognised or corrupt input.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not data:
        raise UndecodableImage("empty object (0 bytes)")
    if len(data) > max_bytes:
        raise UndecodableImage(oversize_reason(len(data), max_bytes))
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format") from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise UndecodableImage(f"unreadable image header: {type(exc).__name__}: {exc}") from None
    original_width, original_height = image.size
    if original_width * original_height > max_pixels:
        raise UndecodableImage(f"image is {original_width}x{original_height} pixels, over the "
                               f"limit of {max_pixels} pixels")
    image_format = image.format or "UNKNOWN"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image_format == "JPEG":
                image.draft("L" if channels == 1 else "RGB", (width, height))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_8bit(image, channels)
            image = image.resize((width, height), Image.Resampling.BILINEAR)
    except UndecodableImage:
        raise
    except Exception as exc:  # truncated data, bad chunks, decoder errors
        raise UndecodableImage(f"corrupt or truncated {image_format} data: "
                               f"{type(exc).__name__}: {exc}") from None
    pixels = np.asarray(image, dtype=np.uint8)
    if channels == 1:
        pixels = pixels[:, :, np.newaxis]
    return DecodedImage(pixels=pixels, width=original_width, height=original_height,
                        format=image_format)


def _to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3)."""
    target = "L" if channels == 1 else "RGB"
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        scale = _HIGH_BIT_DEPTH_MODES[image.mode]
        values = np.asarray(image, dtype=np.float32) * (255.0 / scale)
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(target)
