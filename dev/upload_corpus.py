"""A realistic upload corpus, generated: what a retailer's users upload, at its real sizes.

`make bench`'s other images are 500x375 JPEGs of about 50 KB; uploads are phone photos of 3 to
12 megapixels with EXIF rotation, iPhone HEIC (with the 320x240 thumbnail an iPhone embeds),
PNG screenshots, WebP and AVIF from the web and thumbnails. `MIX` states the mix (format,
stored size, orientation, count); `upload_corpus` makes it from scikit-image's photos
(`sample_images.PHOTOS`), deterministically from a seed, as {key: bytes}:

    corpus = upload_corpus(seed=0, scale=1)      # 13 images, about 6 s on 2 quiet cores
    {kind.name: kind.count * 2 for kind in MIX}  # images of each kind at scale=2

A photo is a random crop of a scikit-image photo (about 512 pixels across) resized to the
camera's size, so it holds no more detail than the source; what makes a phone photo's bytes is
its sensor noise, so each photo gets per-pixel Gaussian noise after the resize (luminance
`noise` levels of 255, chroma half that): at JPEG quality 90, 4:2:0, a 12 MP photo is about
2 MB, as phones write them, and so is the 12 MP HEIC at quality 55. The HEIC carries a
320x240 thumbnail, as an iPhone's does; an iPhone also stores the photo as a grid of 512x512
tiles, which pillow-heif cannot write (it writes one picture). Screenshots are flat UI areas,
text in Pillow's default font and a product photo, as PNG.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, ImageFont
from sample_images import PHOTOS

pillow_heif.register_heif_opener()  # to write HEIC and AVIF, as the job's decoder reads them
pillow_heif.register_avif_opener()

ORIENTATION = 0x0112  # EXIF tag
EXTENSIONS = {"AVIF": "avif", "JPEG": "jpg", "HEIF": "heic", "PNG": "png", "WEBP": "webp"}
ENCODER_SPEED = {"HEIF": {"preset": "ultrafast"},  # x265's default takes 9x as long
                 "AVIF": {"speed": "8"}}           # aom's default (6) 4x as long
"""libheif's encoder parameters by format: fast presets, so the corpus is made in seconds."""
_GAUSSIAN = np.array([NormalDist().inv_cdf((q + 0.5) / 256) for q in range(256)])
"""The standard normal distribution's 256 quantiles, at the middle of each 1/256 of it."""


@dataclass(frozen=True)
class UploadKind:
    """One kind of upload in the mix. `name`: the keys' folder; `format`: Pillow's name of the
    file format (AVIF, JPEG, HEIF, PNG, WEBP); `width`, `height`: pixels as stored (a phone's
    sensor stores landscape; HEIF turns them to the displayed orientation when written);
    `orientation`: the EXIF orientation written (1 to 8), None for no EXIF; `count`: images at
    scale 1; `quality`: the encoder's quality (JPEG, HEIF, WebP, AVIF; None for PNG); `noise`:
    standard deviation of the luminance noise in levels of 255 (0 for screenshots);
    `thumbnail`: the longer side in pixels of the thumbnail libheif embeds beside the image
    (HEIF, AVIF; an iPhone's is 320), None for none."""

    name: str
    format: str
    width: int
    height: int
    orientation: int | None
    count: int
    quality: int | None
    noise: float
    thumbnail: int | None = None

    @property
    def displayed(self) -> tuple[int, int]:
        """(width, height) in pixels as displayed, after the EXIF orientation."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


MIX = (
    UploadKind("photo-12mp", "JPEG", 4032, 3024, 1, 1, 90, 3.0),
    UploadKind("photo-12mp-portrait", "JPEG", 4032, 3024, 6, 1, 90, 3.0),
    UploadKind("photo-3mp", "JPEG", 2016, 1512, 1, 2, 90, 3.0),
    UploadKind("iphone-heic", "HEIF", 4032, 3024, 6, 1, 55, 3.0, thumbnail=320),
    UploadKind("screenshot-phone", "PNG", 1170, 2532, None, 1, None, 0.0),
    UploadKind("screenshot-desktop", "PNG", 1920, 1080, None, 1, None, 0.0),
    UploadKind("web", "WEBP", 1600, 1200, None, 2, 80, 1.0),
    UploadKind("thumbnail", "JPEG", 320, 240, None, 3, 85, 1.0),
    UploadKind("web-avif", "AVIF", 1600, 1200, None, 1, 60, 1.0),
)
"""The upload mix at scale 1: 13 images, 3 of them 12 MP photos."""


def upload_corpus(seed: int = 0, scale: int = 1,
                  kinds: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """{'uploads/<kind>/<n>.<ext>': bytes}: `kind.count * scale` images of each kind of `MIX`
    (n from 000), or only of the kinds named in `kinds`. Image n of a kind is the same bytes for
    a seed at any scale, and with or without `kinds`."""
    return {f"uploads/{kind.name}/{n:03d}.{EXTENSIONS[kind.format]}":
            upload_image(kind, np.random.default_rng([seed, index, n]))
            for index, kind in enumerate(MIX) if kinds is None or kind.name in kinds
            for n in range(kind.count * scale)}


def upload_image(kind: UploadKind, rng: np.random.Generator) -> bytes:
    """The file's bytes of one image of `kind`, drawn with `rng`."""
    size = (kind.width, kind.height)
    if kind.format == "PNG":
        pixels = _screenshot(size, rng)
    else:
        pixels = _with_noise(_photo(size, rng), kind.noise, rng)
    options: dict[str, object] = {}
    if kind.quality is not None:
        options["quality"] = kind.quality
    if kind.format == "JPEG":
        options["subsampling"] = "4:2:0"
    if kind.format in ENCODER_SPEED:
        options["enc_params"] = ENCODER_SPEED[kind.format]
    if kind.thumbnail is not None:
        options["thumbnails"] = [kind.thumbnail]
    if kind.orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = kind.orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind.format, **options)
    return buffer.getvalue()


def _photo(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB (height, width, 3): a random crop of a random scikit-image photo, at the
    aspect ratio of `size` (width, height) and half to all of the photo, resized bicubic to
    `size`."""
    import skimage.data

    photo = getattr(skimage.data, PHOTOS[int(rng.integers(len(PHOTOS)))])()
    rows, columns = photo.shape[:2]
    aspect = size[0] / size[1]
    crop_rows = int(min(rows, columns / aspect) * rng.uniform(0.5, 1.0))
    crop_columns = int(crop_rows * aspect)
    top = int(rng.integers(rows - crop_rows + 1))
    left = int(rng.integers(columns - crop_columns + 1))
    crop = Image.fromarray(photo[top:top + crop_rows, left:left + crop_columns])
    return np.asarray(crop.resize(size, Image.Resampling.BICUBIC))


def _with_noise(pixels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`pixels` (uint8 RGB) with Gaussian sensor noise: `noise` levels of luminance per pixel,
    shared by the three channels, and `noise` / 2 of chroma, each channel its own, per 2x2
    pixels (a camera's chroma noise is coarser than its luminance noise). Each value is one
    of `_GAUSSIAN`'s 256 quantiles, drawn as a byte: a sixth of the time of normal draws."""
    rows, columns = pixels.shape[:2]
    luminance = np.rint(_GAUSSIAN * noise).astype(np.int16)
    chroma = np.rint(_GAUSSIAN * (noise / 2)).astype(np.int16)
    noisy = pixels.astype(np.int16)
    noisy += luminance[rng.integers(0, 256, (rows, columns, 1), dtype=np.uint8)]
    coarse = chroma[rng.integers(0, 256, (-(-rows // 2), -(-columns // 2), 3), dtype=np.uint8)]
    noisy += np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:rows, :columns]
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _screenshot(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB (height, width, 3): a shop page as a screenshot shows it: a flat background, a
    coloured title bar, a product photo and rows of text in Pillow's default font."""
    width, height = size
    unit = width // 40  # the UI's grid: a fortieth of the width
    image = Image.new("RGB", size, (246, 246, 248))
    draw = ImageDraw.Draw(image)
    accent = tuple(int(c) for c in rng.integers(0, 200, 3))
    draw.rectangle((0, 0, width, 4 * unit), fill=accent)
    font = ImageFont.load_default(size=max(unit, 12))
    draw.text((unit, unit), "imagegraph shop", fill=(255, 255, 255), font=font)
    photo_width = min(width - 2 * unit, height // 2)
    photo = Image.fromarray(_photo((photo_width, photo_width * 3 // 4), rng))
    image.paste(photo, (unit, 6 * unit))
    top = 7 * unit + photo.height
    for row in range((height - top) // (3 * unit)):
        price = rng.integers(100, 100_000) / 100
        draw.text((unit, top + 3 * unit * row),
                  f"Item {int(rng.integers(10_000)):04d}  size {row % 5 + 36}  ${price:,.2f}",
                  fill=(30, 30, 30), font=font)
    return np.asarray(image)
