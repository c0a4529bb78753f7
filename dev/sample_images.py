"""Real images for the demo and the tests, made from what scikit-learn and scikit-image ship:
scikit-learn's handwritten digits rendered as PNG files, scikit-image's photos as JPEG files,
and one corrupt file. Returned as {relative key: bytes}, so callers put them anywhere."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

DIGIT_SIZE = 32
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CORRUPT_KEY = "corrupt/broken.jpg"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def digit_images(every_nth_held_out: int = 6, limit: int | None = None
                 ) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """({'<digit>/<n>.png': bytes} to train on, {'<digit>/<n>.png': bytes} held out).

    Each 8x8 digit (values 0..16) is scaled to 0..255 and resized to 32x32 pixels. Every
    `every_nth_held_out`-th digit is held out; `limit` caps the number of digits used.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    train: dict[str, bytes] = {}
    held_out: dict[str, bytes] = {}
    count = len(digits.images) if limit is None else min(limit, len(digits.images))
    for n in range(count):
        small = (digits.images[n] * (255.0 / 16.0)).astype(np.uint8)
        big = np.asarray(Image.fromarray(small).resize((DIGIT_SIZE, DIGIT_SIZE),
                                                       Image.Resampling.BICUBIC))
        key = f"{digits.target[n]}/{n:04d}.png"
        (held_out if n % every_nth_held_out == 0 else train)[key] = _png(big)
    return train, held_out


def photo_images() -> dict[str, bytes]:
    """{'photos/<name>.jpg': bytes} of a few scikit-image photos."""
    import skimage.data

    return {f"photos/{name}.jpg": _jpeg(getattr(skimage.data, name)()) for name in PHOTOS}


def reuploaded_photos() -> dict[str, bytes]:
    """{'reuploads/<name>.jpg': bytes}: photos of `photo_images` uploaded again, the way a
    retailer's uploads repeat: coffee byte for byte, coffee at half size, astronaut saved again
    at JPEG quality 50, rocket with 2.5% cropped off each side."""
    import skimage.data

    coffee, rocket = skimage.data.coffee(), skimage.data.rocket()
    height, width = rocket.shape[:2]
    crop = round(0.025 * height)
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, format="JPEG", quality=50)
    return {
        "reuploads/coffee-copy.jpg": photo_images()["photos/coffee.jpg"],
        "reuploads/coffee-small.jpg": _jpeg(np.asarray(Image.fromarray(coffee).resize(
            (coffee.shape[1] // 2, coffee.shape[0] // 2), Image.Resampling.LANCZOS))),
        "reuploads/astronaut-q50.jpg": buffer.getvalue(),
        "reuploads/rocket-cropped.jpg": _jpeg(rocket[crop:height - crop, crop:width - crop]),
    }


def corrupt_image() -> dict[str, bytes]:
    """{CORRUPT_KEY: bytes}: the first 300 bytes of a JPEG, named like a JPEG."""
    return {CORRUPT_KEY: photo_images()["photos/coffee.jpg"][:300]}


CROP_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
               "immunohistochemistry")
OTHER_PHOTOS = ("retina", "colorwheel", "brick", "grass", "gravel", "camera", "coins")
"""scikit-image photos that are none of `CROP_PHOTOS` (the grayscale ones as RGB)."""


def photo_crops(per_photo: int = 50, size: int = 128, seed: int = 0,
                photos: tuple[str, ...] = CROP_PHOTOS) -> dict[str, bytes]:
    """{'<photo>/<n>.jpg': bytes}: `per_photo` random square crops (30 to 70% of the photo's
    shorter side, flipped at random) of each of the scikit-image `photos` (by default six
    colour photos), as RGB JPEG files of `size` pixels: a labeled set whose class is the photo a
    crop comes from."""
    import skimage.data

    rng = np.random.default_rng(seed)
    crops: dict[str, bytes] = {}
    for name in photos:
        photo = getattr(skimage.data, name)()
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        height, width = photo.shape[:2]
        for n in range(per_photo):
            side = int(min(height, width) * rng.uniform(0.3, 0.7))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = photo[top:top + side, left:left + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            image = Image.fromarray(np.ascontiguousarray(crop)).resize(
                (size, size), Image.Resampling.BILINEAR)
            crops[f"{name}/{n:03d}.jpg"] = _jpeg(np.asarray(image))
    return crops
