"""A HEIF (HEIC) or AVIF file's embedded thumbnail, decoded through libheif's C API, and the
size libheif decodes its primary image at (`decoded_size`), which the pixel limit counts.

An iPhone stores, beside each 12 MP photo, a thumbnail of it (320x240). libheif has no scaled
decode, so the photo costs about half a second of a core whatever size the model wants; its
thumbnail, where it is at least that size, costs a few milliseconds (docs/BENCHMARKS.md).
pillow-heif 0.21 reads only a file's top-level images, not their thumbnails, so this module
calls the libheif its wheel bundles (the library pillow-heif has already loaded) through
ctypes: it opens the bytes, picks a thumbnail of the primary image and decodes it to 8-bit RGB
with its own transformations (rotation, mirroring) applied, as libheif applies the primary's.

A thumbnail is used only if it is at least the size asked for, has the primary image's shape
(so it shows the same picture), and fewer pixels than it (so the caller's pixel limit on the
primary bounds it too). Anything libheif cannot read or decode is no thumbnail: the caller
decodes the primary image, whose errors are the ones to report; a failed allocation is a
`MemoryError`, as for the other decoders.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pillow_heif

_SHAPE_TOLERANCE = 0.02
"""How far a thumbnail's width / height may be from the primary image's, relative to it."""
_HEIF_ERROR_MEMORY_ALLOCATION = 6  # heif_error_code
_COLORSPACE_RGB, _CHROMA_INTERLEAVED_RGB, _CHANNEL_INTERLEAVED = 1, 10, 10  # libheif's enums


class _Error(ctypes.Structure):
    """libheif's `struct heif_error`, which its functions return by value."""

    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


class _Tiling(ctypes.Structure):
    """libheif's `struct heif_image_tiling` (version 1): an image's tiles and its size as
    decoded, in pixels."""

    _fields_ = [("version", ctypes.c_int), ("num_columns", ctypes.c_uint32),
                ("num_rows", ctypes.c_uint32), ("tile_width", ctypes.c_uint32),
                ("tile_height", ctypes.c_uint32), ("image_width", ctypes.c_uint32),
                ("image_height", ctypes.c_uint32), ("top_offset", ctypes.c_uint32),
                ("left_offset", ctypes.c_uint32), ("number_of_extra_dimensions", ctypes.c_uint8),
                ("extra_dimension_size", ctypes.c_uint32 * 8)]


_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "heif_init": (_Error, [_P]),
    "heif_context_alloc": (_P, []),
    "heif_context_free": (None, [_P]),
    "heif_context_read_from_memory_without_copy": (_Error, [_P, ctypes.c_char_p,
                                                            ctypes.c_size_t, _P]),
    "heif_context_get_primary_image_handle": (_Error, [_P, ctypes.POINTER(_P)]),
    "heif_image_handle_get_number_of_thumbnails": (ctypes.c_int, [_P]),
    "heif_image_handle_get_list_of_thumbnail_IDs": (ctypes.c_int, [
        _P, ctypes.POINTER(ctypes.c_uint32), ctypes.c_int]),
    "heif_image_handle_get_thumbnail": (_Error, [_P, ctypes.c_uint32, ctypes.POINTER(_P)]),
    "heif_image_handle_get_width": (ctypes.c_int, [_P]),
    "heif_image_handle_get_height": (ctypes.c_int, [_P]),
    "heif_image_handle_release": (None, [_P]),
    "heif_image_handle_get_image_tiling": (_Error, [_P, ctypes.c_int, ctypes.POINTER(_Tiling)]),
    "heif_decode_image": (_Error, [_P, ctypes.POINTER(_P), ctypes.c_int, ctypes.c_int, _P]),
    "heif_image_get_width": (ctypes.c_int, [_P, ctypes.c_int]),
    "heif_image_get_height": (ctypes.c_int, [_P, ctypes.c_int]),
    "heif_image_get_plane_readonly": (ctypes.POINTER(ctypes.c_uint8), [
        _P, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
    "heif_image_release": (None, [_P]),
}


class _LibheifError(Exception):
    """A libheif call failed; `code` is its `heif_error_code`."""

    def __init__(self, error: _Error):
        super().__init__((error.message or b"").decode(errors="replace"))
        self.code = error.code


def _load() -> ctypes.CDLL | None:
    """The libheif of pillow-heif's wheel (`pillow_heif.libs/`), its functions typed; None
    where the wheel bundles none there (a macOS wheel, a source build): HEIF and AVIF files are
    then decoded whole."""
    bundled = Path(pillow_heif.__file__).parent.parent / "pillow_heif.libs"
    found = sorted(bundled.glob("libheif-*.so*"))
    if not found:
        return None
    library = ctypes.CDLL(str(found[0]))
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    _check(library.heif_init(None))
    return library


def _check(error: _Error) -> None:
    if error.code:
        raise _LibheifError(error)


_LIBHEIF: Any = _load()


def thumbnail(data: bytes, height: int, width: int) -> npt.NDArray[np.uint8] | None:
    """uint8 RGB (rows, columns, 3): the smallest thumbnail of the primary image of `data` (a
    HEIF or AVIF file) that is at least `height` x `width` pixels as displayed, has the primary
    image's shape and fewer pixels (its alpha, if any, dropped); None if it has no such
    thumbnail, libheif cannot read or decode it, or libheif is not bundled here (`_load`).
    Raises `MemoryError` when libheif cannot allocate."""
    if _LIBHEIF is None:
        return None
    context = _LIBHEIF.heif_context_alloc()
    handles: list[ctypes.c_void_p] = []
    try:
        _check(_LIBHEIF.heif_context_read_from_memory_without_copy(context, data, len(data),
                                                                   None))
        primary = ctypes.c_void_p()
        _check(_LIBHEIF.heif_context_get_primary_image_handle(context, ctypes.byref(primary)))
        handles.append(primary)
        chosen = _choose(primary, height, width, handles)
        return None if chosen is None else _decode_rgb(chosen)
    except _LibheifError as error:
        if error.code == _HEIF_ERROR_MEMORY_ALLOCATION:
            raise MemoryError(f"libheif: {error}") from None
        return None
    finally:
        for handle in handles:
            _LIBHEIF.heif_image_handle_release(handle)
        _LIBHEIF.heif_context_free(context)


def decoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels, as displayed, of the primary image of `data` (a HEIF or AVIF
    file) as libheif decodes it: a grid image is decoded at the size its grid descriptor
    declares, which the size Pillow reports (the grid's `ispe` property) may understate. None
    if libheif cannot read it or is not bundled here (`_load`)."""
    if _LIBHEIF is None:
        return None
    context = _LIBHEIF.heif_context_alloc()
    primary = ctypes.c_void_p()
    try:
        _check(_LIBHEIF.heif_context_read_from_memory_without_copy(context, data, len(data),
                                                                   None))
        _check(_LIBHEIF.heif_context_get_primary_image_handle(context, ctypes.byref(primary)))
        tiling = _Tiling(version=1)
        _check(_LIBHEIF.heif_image_handle_get_image_tiling(primary, 1, ctypes.byref(tiling)))
        return tiling.image_width, tiling.image_height
    except _LibheifError:
        return None
    finally:
        _LIBHEIF.heif_image_handle_release(primary)
        _LIBHEIF.heif_context_free(context)


def _size(handle: ctypes.c_void_p) -> tuple[int, int]:
    """(width, height) of an image handle as displayed, its transformations applied."""
    return (_LIBHEIF.heif_image_handle_get_width(handle),
            _LIBHEIF.heif_image_handle_get_height(handle))


def _choose(primary: ctypes.c_void_p, height: int, width: int,
            handles: list[ctypes.c_void_p]) -> ctypes.c_void_p | None:
    """The smallest usable thumbnail of `primary` (see `thumbnail`), or None; every handle
    opened is appended to `handles`, for the caller to release."""
    primary_width, primary_height = _size(primary)
    count = _LIBHEIF.heif_image_handle_get_number_of_thumbnails(primary)
    ids = (ctypes.c_uint32 * count)()
    _LIBHEIF.heif_image_handle_get_list_of_thumbnail_IDs(primary, ids, count)
    usable: list[tuple[int, int, ctypes.c_void_p]] = []
    for item in ids:
        handle = ctypes.c_void_p()
        _check(_LIBHEIF.heif_image_handle_get_thumbnail(primary, item, ctypes.byref(handle)))
        handles.append(handle)
        columns, rows = _size(handle)
        same_shape = (abs(columns * primary_height - rows * primary_width)
                      <= _SHAPE_TOLERANCE * rows * primary_width)
        if (rows >= height and columns >= width and same_shape
                and rows * columns < primary_width * primary_height):
            usable.append((rows * columns, len(usable), handle))
    return min(usable)[2] if usable else None


def _decode_rgb(handle: ctypes.c_void_p) -> npt.NDArray[np.uint8]:
    """The image of `handle` decoded to 8-bit interleaved RGB, its transformations applied,
    as a (rows, columns, 3) array of its own."""
    image = ctypes.c_void_p()
    _check(_LIBHEIF.heif_decode_image(handle, ctypes.byref(image), _COLORSPACE_RGB,
                                      _CHROMA_INTERLEAVED_RGB, None))
    try:
        stride = ctypes.c_int()
        plane = _LIBHEIF.heif_image_get_plane_readonly(image, _CHANNEL_INTERLEAVED,
                                                       ctypes.byref(stride))
        if not plane:
            raise _LibheifError(_Error(code=-1, message=b"no interleaved RGB plane"))
        rows = _LIBHEIF.heif_image_get_height(image, _CHANNEL_INTERLEAVED)
        columns = _LIBHEIF.heif_image_get_width(image, _CHANNEL_INTERLEAVED)
        strided = np.ctypeslib.as_array(plane, (rows, stride.value))
        return strided[:, :3 * columns].reshape(rows, columns, 3).copy()
    finally:
        _LIBHEIF.heif_image_release(image)
