"""Image decoding: bytes of an untrusted object -> a fixed-size uint8 pixel array, or a reason.

Pure functions, no Spark and no TensorFlow, so they are unit-tested on their own.

The bytes come from whoever could write to the input bucket, so the decoder is limited before
it does any work: only the formats in `READ_FORMATS` are parsed (Pillow's other plugins, such as
EPS, which runs Ghostscript, are never reached), an object over `max_bytes` is not opened, and
an image whose header declares more than `max_pixels` pixels is not decoded (a HEIF or AVIF
grid counts the size libheif decodes it at, which its header may understate to Pillow: see
`_decoded_size`). Pillow's own limits on metadata (a PNG text chunk that inflates past
`PngImagePlugin.MAX_TEXT_CHUNK`) and truncated data (`ImageFile.LOAD_TRUNCATED_IMAGES` stays
False) turn into reasons, like any decoder error.

A failure about the bytes is `UndecodableImage`, final: the same bytes fail the same way on any
run. A worker short of memory is not the object's fault: an allocation that fails in Pillow,
libjpeg-turbo, numpy or OpenCV is `DecoderOutOfMemory`, which a later run may not meet.

Pillow reads every header (format, size, EXIF), so every limit above is checked before any
decoder runs. Each format's pixels then go to the decoder chosen by measurement on the upload
corpus (docs/BENCHMARKS.md, "Decoder candidates"): a YCbCr or grayscale JPEG, most of what a
photo bucket holds, to libjpeg-turbo through `simplejpeg`, straight into the target colour
space and scaled in the DCT (by 1/8, 1/4 or 1/2: its other M/8 scales were no faster); an
8-bit gray, RGB or RGBA PNG (screenshots) to libspng through `pyspng`, 1.6 to 2x Pillow's speed
(it holds the GIL while it decodes, unlike the others; a task on 2 cores still measured no slower
with it than with OpenCV's libpng: docs/BENCHMARKS.md, "On threads"); a still WebP without
alpha to OpenCV's libwebp, 1.2 to 1.6x Pillow's. Anything else, and any object one of those
objects to, goes to Pillow, which words the reason as for any format. OpenCV's bilinear resize
takes all to the model's input size. On the 500x375 photos of `make bench` the JPEG path costs
about a third of Pillow decoding and resizing alone.
A HEIF (HEIC) or AVIF file is read by libheif through pillow-heif; where the file carries a
thumbnail of at least the target size with the photo's shape (`libheif.thumbnail`) and the
photo has no alpha, that thumbnail is decoded instead of the photo, which libheif cannot decode
scaled.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
import pyspng
import simplejpeg
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from imagegraph.imaging import libheif

cv2.setNumThreads(1)  # resizes run on the reader threads; OpenCV's own pool would oversubscribe
# Pillow's own bomb check is replaced by the configured `max_pixels` check in `decode_image`.
Image.MAX_IMAGE_PIXELS = None

# HEIC and HEIF (iPhone photos) and AVIF through libheif, which applies their rotation when it
# decodes and reports the displayed size and orientation 1 (Pillow 11.0 reads no AVIF itself)
pillow_heif.register_heif_opener()
pillow_heif.register_avif_opener()

READ_FORMATS = ("AVIF", "BMP", "GIF", "HEIF", "JPEG", "PNG", "TIFF", "WEBP")
"""The Pillow formats an object may be in; anything else is dead-lettered unparsed."""

_HIGH_BIT_DEPTH_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0,
                         "I": 65535.0, "F": 1.0}
_LIBHEIF_FORMATS = {"AVIF", "HEIF"}
_LIBSPNG_COLOUR_TYPES = {0, 2, 6}
"""The PNG colour types libspng decodes here, at 8 bits a sample: gray, RGB, RGBA. It ignores a
palette's transparency and cannot output gray with alpha, so those, and 16-bit PNGs, stay with
Pillow."""
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations displayed rotated by 90 degrees
_SNIFF_BYTES = 1024
_PNG_EXIF_KEYS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")
"""Where Pillow finds a PNG's orientation: the eXIf chunk's type, and the keywords, stored
uncompressed, of the text chunks it also reads EXIF (ImageMagick's) and XMP from."""
_OPENCV_ERROR = re.compile(r"error: \((?P<code>-?\d+):[^)]*\) (?P<text>.*?)"
                           r"(?: in function '[^']*')?\s*$", re.DOTALL)
"""A `cv2.error`'s message: 'OpenCV(4.10.0) FILE:LINE: error: (-4:Insufficient memory) Failed
to allocate N bytes in function 'F''. Its code is read from the message: the `code` attribute
is the error type's, set by the last error raised in any thread."""
# How Pillow words a codec's allocation failure (IMAGING_CODEC_MEMORY): it raises OSError.
_PILLOW_CODEC_OUT_OF_MEMORY = str(ImageFile._get_oserror(-9, encoder=False))


class UndecodableImage(ValueError):
    """The object is not an image this job can classify; `reason` says why, for dead-letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DecoderOutOfMemory(Exception):
    """Decoding failed for want of memory in the worker, not because of the bytes: a later
    run may decode the same object. `reason` says so, for dead-letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the ways the decoding libraries report a failed allocation: `MemoryError`
    (Python, numpy, Pillow's image buffers, libjpeg-turbo), OpenCV's `cv2.error` with code
    `StsNoMem`, and the `OSError` Pillow raises when a codec runs out of memory."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, cv2.error):
        error = _OPENCV_ERROR.search(str(exc))
        return error is not None and int(error["code"]) == cv2.Error.StsNoMem
    return isinstance(exc, OSError) and str(exc) == _PILLOW_CODEC_OUT_OF_MEMORY


def _out_of_memory(exc: BaseException) -> DecoderOutOfMemory:
    """The dead-letter reason of `exc`, a failed allocation; OpenCV's in its own words,
    without the version, source file and function its message adds."""
    error = _OPENCV_ERROR.search(str(exc)) if isinstance(exc, cv2.error) else None
    if error is not None:
        return DecoderOutOfMemory(f"out of memory while decoding: OpenCV: {error['text']}")
    return DecoderOutOfMemory(f"out of memory while decoding: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class DecodedImage:
    """`pixels`: uint8 array (height, width, channels) at the model's input size.
    `width`/`height`: the original image's size in pixels as displayed (after its EXIF
    orientation); `format`: Pillow's name (PNG, JPEG)."""

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
    grayscale or RGB (alpha composited onto white); of an animated image, the first frame is
    used. Raises `UndecodableImage` for empty, oversized, unrecognised or corrupt input, and
    `DecoderOutOfMemory` when an allocation fails (see `is_out_of_memory`).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not data:
        raise UndecodableImage("empty object (0 bytes)")
    if len(data) > max_bytes:
        raise UndecodableImage(oversize_reason(len(data), max_bytes))
    try:
        image = Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except UnidentifiedImageError:
        raise UndecodableImage(unrecognised_reason(data)) from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        if is_out_of_memory(exc):
            raise _out_of_memory(exc) from None
        raise UndecodableImage(f"unreadable image header: {type(exc).__name__}: {exc}") from None
    stored_width, stored_height = image.size
    decoded_width, decoded_height = _decoded_size(image, data)
    if decoded_width * decoded_height > max_pixels:
        raise UndecodableImage(f"image is {decoded_width}x{decoded_height} pixels, over the "
                               f"limit of {max_pixels} pixels")
    image_format = image.format or "UNKNOWN"
    try:
        orientation = _orientation(image, data)
        transposed = orientation in _TRANSPOSED_ORIENTATIONS
        stored_target = (width, height) if transposed else (height, width)
        pixels = None
        if image_format == "JPEG" and image.mode in ("L", "RGB"):
            pixels = _decode_jpeg(data, channels, (stored_height, stored_width), stored_target)
        elif image_format == "PNG":
            pixels = _decode_png(data, channels)
        elif (image_format == "WEBP" and image.mode == "RGB"
              and not getattr(image, "is_animated", False)):
            pixels = _decode_webp(data, channels)
        elif image_format in _LIBHEIF_FORMATS and image.mode in ("L", "RGB"):  # no alpha
            pixels = _decode_thumbnail(data, channels, stored_target)
        if pixels is None:
            pixels = _decode_with_pillow(image, channels, stored_target)
        pixels = _resize(_orient(pixels, orientation), height, width)
    except Exception as exc:  # truncated data, bad chunks, decoder errors
        if is_out_of_memory(exc):
            raise _out_of_memory(exc) from None
        raise UndecodableImage(f"corrupt or truncated {image_format} data: "
                               f"{type(exc).__name__}: {exc}") from None
    if transposed:
        stored_width, stored_height = stored_height, stored_width
    return DecodedImage(pixels=pixels, width=stored_width, height=stored_height,
                        format=image_format)


def _decoded_size(image: Image.Image, data: bytes) -> tuple[int, int]:
    """(width, height) in pixels that decoding `image`, opened from `data`, produces: its
    size, or a HEIF or AVIF grid's (`libheif.decoded_size`) where that is larger."""
    width, height = image.size
    if image.format in _LIBHEIF_FORMATS:
        decoded = libheif.decoded_size(data)
        if decoded is not None and decoded[0] * decoded[1] > width * height:
            return decoded
    return width, height


def _decode_jpeg(data: bytes, channels: int, stored: tuple[int, int],
                 target: tuple[int, int]) -> np.ndarray | None:
    """libjpeg-turbo's decode of a YCbCr or grayscale JPEG of `stored` (height, width) pixels,
    scaled in the DCT by the largest of 1/8, 1/4, 1/2 that keeps it at least `target` (height,
    width) (what Pillow's draft mode does); None when libjpeg-turbo reports anything wrong, so
    that Pillow decides (it tolerates warnings such as extraneous bytes, and words truncation
    as for other formats)."""
    (stored_height, stored_width), (height, width) = stored, target
    scale = next((s for s in (8, 4, 2)
                  if -(-stored_height // s) >= height and -(-stored_width // s) >= width), 1)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB",
                                      min_height=-(-stored_height // scale),
                                      min_width=-(-stored_width // scale), strict=True)
    except ValueError:
        return None


def _decode_png(data: bytes, channels: int) -> np.ndarray | None:
    """libspng's decode of an 8-bit gray, RGB or RGBA PNG (`_LIBSPNG_COLOUR_TYPES`, read from
    the IHDR chunk, which the PNG signature's 8 bytes and the chunk's length and type precede),
    in 8-bit grayscale or RGB; None for other PNGs and when libspng reports anything wrong
    (truncated or corrupt data), so that Pillow decides and words the reason."""
    bit_depth, colour_type = data[24], data[25]
    if data[12:16] != b"IHDR" or bit_depth != 8 or colour_type not in _LIBSPNG_COLOUR_TYPES:
        return None
    try:
        return _to_channels(pyspng.load(data), channels)
    except RuntimeError:  # pyspng's error type; numpy's failed allocation, a MemoryError, passes
        return None


def _decode_webp(data: bytes, channels: int) -> np.ndarray | None:
    """OpenCV's (libwebp's) decode of a still WebP without alpha, as stored (the EXIF
    orientation is `decode_image`'s to apply), in 8-bit grayscale or RGB; None when OpenCV
    cannot decode it, so that Pillow decides and words the reason."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return None
    return _to_channels(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), channels)


def _decode_thumbnail(data: bytes, channels: int, target: tuple[int, int]) -> np.ndarray | None:
    """The embedded thumbnail of a HEIF or AVIF file that is at least `target` (height, width)
    (`libheif.thumbnail`), in 8-bit grayscale or RGB; None if it has none."""
    rgb = libheif.thumbnail(data, *target)
    return None if rgb is None else _to_channels(rgb, channels)


def _decode_with_pillow(image: Image.Image, channels: int,
                        target: tuple[int, int]) -> np.ndarray:
    """Pillow's decode of any READ_FORMATS image, in 8-bit grayscale or RGB; a JPEG in draft
    mode at the smallest DCT scale that stays at least `target` (height, width)."""
    if image.format == "JPEG":
        image.draft("L" if channels == 1 else "RGB", target[::-1])
    image.load()
    return np.asarray(_to_8bit(image, channels), dtype=np.uint8)


def _orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF orientation (1 to 8; 1 when there is none) of `image` opened from `data`.

    Pillow finds a PNG's EXIF or XMP after the pixels only by decoding them all, which would
    undo a faster decoder's gain: a PNG whose bytes hold none of `_PNG_EXIF_KEYS` has no
    orientation for Pillow to find, and is not decoded for it."""
    if image.format == "PNG" and not any(key in data for key in _PNG_EXIF_KEYS):
        return 1
    orientation: int = image.getexif().get(ExifTags.Base.Orientation, 1)
    return orientation


_ORIENTATION_TURNS = {2: lambda p: p[:, ::-1], 3: lambda p: p[::-1, ::-1], 4: lambda p: p[::-1],
                      5: lambda p: p.swapaxes(0, 1), 6: lambda p: np.rot90(p, -1),
                      7: lambda p: p.swapaxes(0, 1)[::-1, ::-1], 8: lambda p: np.rot90(p, 1)}
"""EXIF orientation -> how an (h, w, ...) array stored so is turned to be displayed."""


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` as displayed under EXIF `orientation` (1-8; other values: as stored), as
    Pillow's `ImageOps.exif_transpose` turns them."""
    if orientation not in _ORIENTATION_TURNS:
        return pixels
    return np.ascontiguousarray(_ORIENTATION_TURNS[orientation](pixels))


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 (h, w) or (h, w, c) pixels to (height, width, channels).

    Bilinear interpolation reads only the 2x2 neighbours of each output pixel (as
    `tf.image.resize` does by default), so it would skip pixels when shrinking by 2 or more;
    first the image is halved (each output pixel then averages a pair) along every axis still
    at least twice the target, as a mipmap is built.
    """
    while True:
        rows, columns = pixels.shape[:2]
        halved = (columns // 2 if columns >= 2 * width else columns,
                  rows // 2 if rows >= 2 * height else rows)
        if halved == (columns, rows):
            break
        pixels = cv2.resize(pixels, halved, interpolation=cv2.INTER_LINEAR)
    if pixels.shape[:2] != (height, width):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    return pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]


def unrecognised_reason(data: bytes) -> str:
    """Why bytes that no reader in `READ_FORMATS` accepts are not classified: an HTML page
    (often an error page saved under an image's name), other text, or an unknown format."""
    head = data[:_SNIFF_BYTES]
    text = head.decode("utf-8", errors="replace")
    if len(head) == _SNIFF_BYTES:
        text = text[:-3]  # a multi-byte character cut at the end is not evidence of binary
    if "\ufffd" not in text and all(char.isprintable() or char in "\t\r\n"
                                     for char in text.lstrip("\ufeff")):
        lowered = text.lower()
        if "<html" in lowered or "<!doctype html" in lowered:
            return "not an image: HTML document"
        return "not an image: text"
    return f"unrecognised image format (this job reads {', '.join(READ_FORMATS)})"


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """8-bit (h, w) gray, (h, w, 3) RGB or (h, w, 4) RGBA pixels from a decoder other than
    Pillow, as `_to_8bit` converts Pillow's: (h, w) gray or (h, w, 3) RGB by `channels`;
    unchanged when already so."""
    if (pixels.ndim == 2 and channels == 1) or (pixels.shape[2:] == (3,) and channels == 3):
        return pixels
    return np.asarray(_to_8bit(Image.fromarray(pixels), channels), dtype=np.uint8)


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
