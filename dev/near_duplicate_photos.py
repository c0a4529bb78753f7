"""Re-uploads of scikit-image's photos and unrelated photos, as bytes: what the near-duplicate
test (`tests/unit/test_near_duplicates.py`) and `dev/near_duplicate_distances.py` hash.

Each photo's copies are what a re-upload makes of it: re-encoded (JPEG at quality 90, 70 and
40, PNG, WebP), resized (half and 1.5 times the size), cropped (2.5% off each side, 5% off the
left) and stored rotated with the EXIF orientation that turns it back. The unrelated photos are
each photo's quarters (and sixteenths): a crop of a quarter of a photo is another picture to
the hash.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "camera", "chelsea", "cell", "clock", "coffee", "coins",
          "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
          "text", "colorwheel", "logo")
"""scikit-image's photos and pictures that ship with it (`cat` is `chelsea`; the textures
brick, grass and gravel are left out: a crop of a texture is another texture)."""

TEST_COPIES = ("jpeg", "q40", "png", "half", "larger", "cropped", "cropped-left")
"""The copies of the unit test: 7 a photo, 336 duplicate pairs among 16 photos."""

ALL_COPIES = (*TEST_COPIES, "q70", "webp", "exif-rotated")
"""Every copy `copies` makes."""

_EXIF_ORIENTATION = 0x0112
_ROTATED_90_CLOCKWISE = 6   # EXIF orientation: turn the stored pixels 90 degrees clockwise


def photo(name: str) -> np.ndarray:
    """scikit-image's photo `name` as uint8 pixels, (height, width) or (height, width, 3)."""
    import skimage.data

    pixels = getattr(skimage.data, name)()
    return pixels[:, :, :3] if pixels.ndim == 3 else pixels


def encoded(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 90,
            orientation: int = 1) -> bytes:
    """`pixels` saved as `fmt` (JPEG and WebP at `quality`), with EXIF `orientation` unless
    1."""
    buffer = io.BytesIO()
    options: dict = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if orientation != 1:
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION] = orientation
        options["exif"] = exif
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def copies(pixels: np.ndarray, names: tuple[str, ...] = ALL_COPIES) -> dict[str, bytes]:
    """{name: bytes}: the photo's copies of `names` (`ALL_COPIES`; "jpeg" is the photo itself
    at JPEG quality 90, the others its re-uploads)."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)
    crop = round(0.025 * min(height, width))
    made = {
        "jpeg": lambda: encoded(pixels), "q70": lambda: encoded(pixels, quality=70),
        "q40": lambda: encoded(pixels, quality=40), "png": lambda: encoded(pixels, "PNG"),
        "webp": lambda: encoded(pixels, "WEBP", quality=80),
        "half": lambda: encoded(np.asarray(image.resize((width // 2, height // 2),
                                                        Image.Resampling.LANCZOS))),
        "larger": lambda: encoded(np.asarray(image.resize((width * 3 // 2, height * 3 // 2),
                                                          Image.Resampling.BICUBIC))),
        "cropped": lambda: encoded(pixels[crop:height - crop, crop:width - crop]),
        "cropped-left": lambda: encoded(pixels[:, 2 * crop:]),
        # stored turned a quarter counter-clockwise, displayed turned back
        "exif-rotated": lambda: encoded(np.ascontiguousarray(np.rot90(pixels)),
                                        orientation=_ROTATED_90_CLOCKWISE),
    }
    return {name: made[name]() for name in names}


def pieces(pixels: np.ndarray, per_side: int = 2) -> dict[str, bytes]:
    """{name: JPEG bytes}: the photo cut into `per_side` x `per_side` pieces (quarters: 2),
    unrelated pictures to the hash."""
    height, width = pixels.shape[:2]
    step_y, step_x = height // per_side, width // per_side
    label = "quarter" if per_side == 2 else f"piece{per_side}"
    return {f"{label}-{row * per_side + column}":
            encoded(pixels[row * step_y:(row + 1) * step_y, column * step_x:(column + 1) * step_x])
            for row in range(per_side) for column in range(per_side)}


def photo_set(names: tuple[str, ...] = TEST_COPIES,
              per_side: int = 2) -> dict[tuple[str, str], bytes]:
    """{(group, name): bytes}: each photo's copies of `names` share a group; each piece
    (`pieces`, `per_side`) is a group of its own."""
    images = {}
    for name in PHOTOS:
        pixels = photo(name)
        images.update({(name, copy): data for copy, data in copies(pixels, names).items()})
        images.update({(f"{name}/{piece}", piece): data
                       for piece, data in pieces(pixels, per_side).items()})
    return images
