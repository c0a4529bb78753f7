"""Odd and hostile input objects, each with what the job must do with it: classify it (with the
width, height and format the graph must hold) or dead-letter it (with the exact reason).

Shared by the decoder's unit tests and the integration test that runs the corpus through a
whole inference run. Everything is generated here, small, from Pillow and scikit-image, and
written by Pillow, pillow-heif, libheif (a grid HEIC) and pypng (interlaced PNGs).

    cases = corpus(max_image_bytes=100_000, max_image_pixels=89_478_485)
    {case.key: case.data for case in cases}      # objects to put under a prefix
"""
from __future__ import annotations

import ctypes
import io
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
import png
from PIL import Image

pillow_heif.register_heif_opener()  # to write the HEIC and AVIF cases, as the decoder reads them
pillow_heif.register_avif_opener()

ORIENTATION = 0x0112  # EXIF tag
ROTATE_90_CW = 6      # orientation value: displayed rotated 90 degrees clockwise
RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
GRID_COLOURS = ((RED, (0, 255, 0), BLUE), ((255, 255, 0), (0, 255, 255), (255, 0, 255)))
"""grid.heic's tiles as stored, by (row, column): each tile a colour of its own."""
GRID_TILE = 64  # grid.heic's tile side in pixels (an iPhone's are 512)
GRAY16_BANDS = (0, 16384, 32768, 65535)   # 16-bit levels, left to right
INJECTION_KEY = "odd-keys/x');g.V().drop().iterate();('.png"
"""A valid image whose name reads as Gremlin: a traversal built as text would run it."""


@dataclass(frozen=True)
class Classified:
    """Expected outcome: written to the graph with these properties."""

    width: int
    height: int
    format: str


@dataclass(frozen=True)
class DeadLettered:
    """Expected outcome: a dead-letter record with exactly this reason."""

    reason: str


@dataclass(frozen=True)
class Case:
    key: str
    data: bytes
    expected: Classified | DeadLettered


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(size: tuple[int, int], left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    """An image of `size` (width, height): colour `left` on the left half, `right` on the right."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def photo(size: tuple[int, int]) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.coffee()).resize(size, Image.Resampling.BILINEAR)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def huge_dimensions_png(width: int, height: int) -> bytes:
    """A 60-odd byte PNG whose header declares width x height 8-bit grayscale pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def text_bomb_png() -> bytes:
    """A valid 4x4 PNG carrying a zTXt chunk that inflates to 20 MB (about 20 KB stored)."""
    png = encode(Image.new("L", (4, 4)), "PNG")
    bomb = _png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 20_000_000, 9))
    return png[:33] + bomb + png[33:]  # right after the 33-byte signature and IHDR


def dos_eps() -> bytes:
    """A binary (DOS) EPS: Pillow's EPS plugin would hand its PostScript to Ghostscript."""
    postscript = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    header = struct.pack("<4sIIIIIIH", b"\xc5\xd0\xd3\xc6", 30, len(postscript), 0, 0, 0, 0,
                         0xFFFF)
    return header + postscript


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_90_CW
    return encode(halves((40, 20), BLACK, WHITE), "JPEG", quality=95, exif=exif.tobytes())


def _exif_rotated(fmt: str) -> bytes:
    """A HEIF or AVIF stored as an iPhone stores a portrait photo: libheif turns the EXIF
    orientation into the file's own rotation (irot) when it writes one."""
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_90_CW
    return encode(halves((40, 20), BLACK, WHITE), fmt, quality=90, exif=exif.tobytes())


def heic_with_thumbnail() -> bytes:
    """A 320x240 photo stored rotated (shown 240x320), with a thumbnail of 64x48 (shown
    48x64) as an iPhone embeds one, each at libheif's quality 75."""
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_90_CW
    return encode(photo((320, 240)), "HEIF", quality=75, exif=exif.tobytes(), thumbnails=[64])


class _HeifError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


def _libheif() -> ctypes.CDLL:
    """The libheif of pillow-heif's wheel, with the functions `grid_heic` calls typed."""
    bundled = Path(pillow_heif.__file__).parent.parent / "pillow_heif.libs"
    library = ctypes.CDLL(str(sorted(bundled.glob("libheif-*.so*"))[0]))
    p, u32, pointer = ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER
    for name, result, arguments in (
            ("heif_context_alloc", p, []), ("heif_context_free", None, [p]),
            ("heif_context_get_encoder_for_format", _HeifError, [p, ctypes.c_int, pointer(p)]),
            ("heif_encoder_set_lossy_quality", _HeifError, [p, ctypes.c_int]),
            ("heif_encoder_release", None, [p]),
            ("heif_image_create", _HeifError, [ctypes.c_int] * 4 + [pointer(p)]),
            ("heif_image_add_plane", _HeifError, [p] + [ctypes.c_int] * 4),
            ("heif_image_get_plane", pointer(ctypes.c_uint8), [p, ctypes.c_int,
                                                               pointer(ctypes.c_int)]),
            ("heif_image_release", None, [p]),
            ("heif_context_encode_grid", _HeifError, [p, pointer(p), ctypes.c_uint16,
                                                      ctypes.c_uint16, p, p, pointer(p)]),
            ("heif_image_handle_get_item_id", u32, [p]),
            ("heif_image_handle_release", None, [p]),
            ("heif_item_add_raw_property", _HeifError, [p, u32, u32, p, ctypes.c_char_p,
                                                        ctypes.c_size_t, ctypes.c_int,
                                                        pointer(u32)]),
            ("heif_context_add_exif_metadata", _HeifError, [p, p, ctypes.c_char_p,
                                                            ctypes.c_int]),
            ("heif_context_write_to_file", _HeifError, [p, ctypes.c_char_p])):
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    return library


def _heif_check(error: _HeifError) -> None:
    if error.code:
        raise RuntimeError(f"libheif: {error.message.decode()}")


def grid_heic(tiles: np.ndarray, quarter_turns_ccw: int, exif: bytes, quality: int) -> bytes:
    """A HEIC whose primary image is a `grid` of HEVC tiles, as an iPhone stores a photo,
    written by libheif 1.19 (pillow-heif's own library; pillow-heif writes single pictures).

    `tiles`: uint8 RGB, (rows, columns, tile height, tile width, 3), encoded at libheif's
    `quality` (0-100). libheif writes the tiles as hidden `hvc1` items, the `grid` item (its
    descriptor in `idat`, `dimg` references to the tiles in row-major order, `ispe` of the
    whole) as the primary item, and `exif` (as `Image.Exif.tobytes` gives it) as an `Exif`
    item describing it. The grid is rotated by an `irot` property of `quarter_turns_ccw` x 90
    degrees anticlockwise (0-3), added as a raw property: libheif's own `image_orientation`
    encoding option puts the rotation on each tile, not on the grid. libheif's
    `heif_context_encode_grid` takes the columns before the rows, whatever its header names
    them."""
    library = _libheif()
    rows, columns, tile_height, tile_width = tiles.shape[:4]
    context, encoder, handle = library.heif_context_alloc(), ctypes.c_void_p(), ctypes.c_void_p()
    images = (ctypes.c_void_p * (rows * columns))()
    try:
        _heif_check(library.heif_context_get_encoder_for_format(context, 1,  # HEVC
                                                                ctypes.byref(encoder)))
        _heif_check(library.heif_encoder_set_lossy_quality(encoder, quality))
        for index, tile in enumerate(tiles.reshape(-1, tile_height, tile_width, 3)):
            image = ctypes.c_void_p()  # colourspace RGB (1), chroma and channel interleaved (10)
            _heif_check(library.heif_image_create(tile_width, tile_height, 1, 10,
                                                  ctypes.byref(image)))
            images[index] = image
            _heif_check(library.heif_image_add_plane(image, 10, tile_width, tile_height, 8))
            stride = ctypes.c_int()
            plane = library.heif_image_get_plane(image, 10, ctypes.byref(stride))
            np.ctypeslib.as_array(plane, (tile_height, stride.value))[:, :3 * tile_width] = (
                tile.reshape(tile_height, 3 * tile_width))
        _heif_check(library.heif_context_encode_grid(context, images, columns, rows, encoder,
                                                     None, ctypes.byref(handle)))
        grid = library.heif_image_handle_get_item_id(handle)
        if quarter_turns_ccw:
            _heif_check(library.heif_item_add_raw_property(
                context, grid, int.from_bytes(b"irot", "big"), None,
                bytes([quarter_turns_ccw]), 1, 1, ctypes.byref(ctypes.c_uint32())))
        _heif_check(library.heif_context_add_exif_metadata(context, handle, exif, len(exif)))
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "grid.heic"
            _heif_check(library.heif_context_write_to_file(context, str(path).encode()))
            return path.read_bytes()
    finally:
        library.heif_image_handle_release(handle)
        for image in images:
            library.heif_image_release(image)
        library.heif_encoder_release(encoder)
        library.heif_context_free(context)


def _iphone_grid_heic() -> bytes:
    """grid.heic: 2 rows x 3 columns of `GRID_TILE` tiles of `GRID_COLOURS` (192 x 128 stored),
    rotated 90 degrees clockwise as an iPhone stores a portrait photo (shown 128 x 192): the
    grid's `irot`, and EXIF orientation 6 beside it, which a reader must not apply again."""
    tiles = np.array(GRID_COLOURS, np.uint8)[:, :, np.newaxis, np.newaxis]
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATE_90_CW
    return grid_heic(np.broadcast_to(tiles, (2, 3, GRID_TILE, GRID_TILE, 3)), 3,
                     exif.tobytes(), quality=90)


def pypng_png(pixels: np.ndarray, interlace: bool) -> bytes:
    """A PNG written by pypng (Pillow writes no interlaced PNG) of `pixels`, uint8 or uint16
    (rows, columns, 3 for RGB or 4 for RGBA), Adam7-interlaced or not."""
    rows, columns, planes = pixels.shape
    writer = png.Writer(columns, rows, greyscale=False, alpha=planes == 4,
                        bitdepth=8 * pixels.itemsize, interlace=interlace)
    buffer = io.BytesIO()
    writer.write(buffer, pixels.reshape(rows, columns * planes))
    return buffer.getvalue()


def interlaced_sources() -> dict[str, np.ndarray]:
    """The pixels of the interlaced PNG cases by key, 45 x 29 (no side a multiple of Adam7's
    8): a photo in 8-bit RGB; with an alpha ramp from 0 to 255, RGBA; in 16-bit RGB, each
    sample's low byte other than its high byte."""
    rgb = np.asarray(photo((45, 29)))
    alpha = np.linspace(0, 255, 29 * 45).astype(np.uint8).reshape(29, 45, 1)
    return {"interlaced-rgb.png": rgb,
            "interlaced-rgba.png": np.concatenate([rgb, alpha], axis=2),
            "interlaced-rgb16.png": rgb.astype(np.uint16) * 256 + (255 - rgb)}


def _gray16_png() -> bytes:
    bands = np.repeat(np.array(GRAY16_BANDS, dtype=np.uint16), 12)  # 48 columns
    return encode(Image.fromarray(np.tile(bands, (32, 1))), "PNG")   # 48x32, mode I;16


def _palette_png_with_transparency() -> bytes:
    image = Image.new("P", (24, 24), 0)
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.paste(1, (12, 0, 24, 24))
    return encode(image, "PNG", transparency=0)  # index 0 (red) is fully transparent


def _animated_gif() -> bytes:
    first, second = Image.new("RGB", (30, 20), RED), Image.new("RGB", (30, 20), BLUE)
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def _noise_png(min_bytes: int) -> bytes:
    """A valid RGB noise PNG (noise does not compress) of more than `min_bytes` bytes."""
    side = int((min_bytes / 3) ** 0.5) + 16
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def corpus(max_image_bytes: int, max_image_pixels: int) -> list[Case]:
    """Every case, for a run whose limits are `max_image_bytes` and `max_image_pixels`
    (`max_image_bytes` must be above 37 KB, the size of the largest object meant to pass)."""
    jpeg = encode(photo((64, 48)), "JPEG", quality=90)
    png = encode(photo((64, 48)), "PNG")
    too_big = _noise_png(max_image_bytes)
    cases = [
        Case("empty.jpg", b"", DeadLettered("empty object (0 bytes)")),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], DeadLettered(
            "corrupt or truncated JPEG data: OSError: image file is truncated "
            "(30 bytes not processed)")),
        Case("truncated.png", png[: len(png) // 2], DeadLettered(
            "corrupt or truncated PNG data: OSError: image file is truncated")),
        Case("text.jpg", b"Quarterly numbers, see attached.\n", DeadLettered("not an image: text")),
        Case("error-page.jpg",
             b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>"
             b"<body><h1>Service Unavailable</h1></body></html>\n",
             DeadLettered("not an image: HTML document")),
        Case("huge-dimensions.png", huge_dimensions_png(100_000, 100_000), DeadLettered(
            f"image is 100000x100000 pixels, over the limit of {max_image_pixels} pixels")),
        Case("text-bomb.png", text_bomb_png(), DeadLettered(
            "unreadable image header: ValueError: Decompressed data too large for "
            "PngImagePlugin.MAX_TEXT_CHUNK")),
        Case("ghostscript.jpg", dos_eps(), DeadLettered(
            "unrecognised image format (this job reads AVIF, BMP, GIF, HEIF, JPEG, PNG, TIFF, "
            "WEBP)")),
        Case("too-many-bytes.png", too_big, DeadLettered(
            f"object is {len(too_big)} bytes, over the limit of {max_image_bytes}")),
        Case("cmyk.jpg", encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"),
             Classified(40, 30, "JPEG")),
        Case("gray16.png", _gray16_png(), Classified(48, 32, "PNG")),
        Case("palette-transparent.png", _palette_png_with_transparency(),
             Classified(24, 24, "PNG")),
        Case("animated.gif", _animated_gif(), Classified(30, 20, "GIF")),
        Case("exif-rotated.jpg", _exif_rotated_jpeg(), Classified(20, 40, "JPEG")),
        Case("halves.webp", encode(halves((36, 24), RED, WHITE), "WEBP", lossless=True),
             Classified(36, 24, "WEBP")),
        Case("photo.tiff", encode(photo((50, 40)), "TIFF"), Classified(50, 40, "TIFF")),
        Case("halves.heic", encode(halves((36, 24), RED, WHITE), "HEIF", quality=90),
             Classified(36, 24, "HEIF")),
        Case("exif-rotated.heic", _exif_rotated("HEIF"), Classified(20, 40, "HEIF")),
        Case("thumbnail.heic", heic_with_thumbnail(), Classified(240, 320, "HEIF")),
        Case("grid.heic", _iphone_grid_heic(), Classified(128, 192, "HEIF")),
        Case("halves.avif", encode(halves((36, 24), RED, WHITE), "AVIF", quality=90),
             Classified(36, 24, "AVIF")),
        Case("exif-rotated.avif", _exif_rotated("AVIF"), Classified(20, 40, "AVIF")),
        *(Case(key, pypng_png(pixels, interlace=True), Classified(45, 29, "PNG"))
          for key, pixels in interlaced_sources().items()),
        Case(INJECTION_KEY, encode(halves((16, 16), BLACK, WHITE), "PNG"),
             Classified(16, 16, "PNG")),
    ]
    largest_valid = max(len(c.data) for c in cases if isinstance(c.expected, Classified))
    if max_image_bytes <= largest_valid:
        raise ValueError(f"max_image_bytes must be above {largest_valid}")
    return cases
