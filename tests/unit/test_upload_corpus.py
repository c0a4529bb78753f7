"""dev/upload_corpus.py's contract: the stated mix of formats, sizes and orientations at
phone-like byte sizes, the same bytes from the same seed, and every image classified by the
job's own decoder at the model's size."""
import io

import numpy as np
import pytest
from PIL import Image
from upload_corpus import MIX, ORIENTATION, upload_corpus, upload_image

from imagegraph.config import InferenceConfig
from imagegraph.imaging import libheif
from imagegraph.imaging.decode import decode_image

MB = 1_000_000
EXPECTED = {
    # key: (Pillow's format, Pillow's size, EXIF orientation, displayed size, bytes range)
    "uploads/photo-12mp/000.jpg": ("JPEG", (4032, 3024), 1, (4032, 3024), (1 * MB, 5 * MB)),
    "uploads/photo-12mp-portrait/000.jpg": ("JPEG", (4032, 3024), 6, (3024, 4032),
                                            (1 * MB, 5 * MB)),
    "uploads/photo-3mp/000.jpg": ("JPEG", (2016, 1512), 1, (2016, 1512), (MB // 4, 2 * MB)),
    "uploads/photo-3mp/001.jpg": ("JPEG", (2016, 1512), 1, (2016, 1512), (MB // 4, 2 * MB)),
    # libheif writes the EXIF rotation as the file's own; Pillow reads it displayed
    "uploads/iphone-heic/000.heic": ("HEIF", (3024, 4032), 1, (3024, 4032), (1 * MB, 5 * MB)),
    "uploads/screenshot-phone/000.png": ("PNG", (1170, 2532), None, (1170, 2532),
                                         (MB // 4, 3 * MB)),
    "uploads/screenshot-desktop/000.png": ("PNG", (1920, 1080), None, (1920, 1080),
                                           (MB // 10, 3 * MB)),
    "uploads/web/000.webp": ("WEBP", (1600, 1200), None, (1600, 1200), (10_000, MB)),
    "uploads/web/001.webp": ("WEBP", (1600, 1200), None, (1600, 1200), (10_000, MB)),
    "uploads/thumbnail/000.jpg": ("JPEG", (320, 240), None, (320, 240), (2_000, 50_000)),
    "uploads/thumbnail/001.jpg": ("JPEG", (320, 240), None, (320, 240), (2_000, 50_000)),
    "uploads/thumbnail/002.jpg": ("JPEG", (320, 240), None, (320, 240), (2_000, 50_000)),
    "uploads/web-avif/000.avif": ("AVIF", (1600, 1200), None, (1600, 1200), (10_000, MB)),
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return upload_corpus(seed=0)


def test_the_corpus_is_the_stated_mix(corpus):
    assert sorted(corpus) == sorted(EXPECTED)
    assert {kind.name: kind.count for kind in MIX} == {
        "photo-12mp": 1, "photo-12mp-portrait": 1, "photo-3mp": 2, "iphone-heic": 1,
        "screenshot-phone": 1, "screenshot-desktop": 1, "web": 2, "thumbnail": 3,
        "web-avif": 1}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_format_size_orientation_and_bytes_as_pillow_reads_them(corpus, key):
    image_format, size, orientation, _, (least, most) = EXPECTED[key]
    image = Image.open(io.BytesIO(corpus[key]))
    assert (image.format, image.size) == (image_format, size)
    assert image.getexif().get(ORIENTATION) == orientation
    assert least <= len(corpus[key]) <= most


def test_photos_carry_sensor_noise_not_a_smooth_upscale(corpus):
    """Neighbouring pixels of a 12 MP photo differ as a sensor's do: the source photo, about
    512 pixels across, upscaled 8 times alone would leave them within a level or two."""
    pixels = np.asarray(Image.open(io.BytesIO(corpus["uploads/photo-12mp/000.jpg"])),
                        dtype=np.int16)
    assert np.abs(np.diff(pixels[:, :, 1], axis=1)).mean() > 2.0


def test_the_heic_carries_a_thumbnail_as_an_iphone_writes_it(corpus):
    """320x240, turned as the photo is (shown 240x320); no other image has one."""
    heic = corpus["uploads/iphone-heic/000.heic"]
    assert Image.open(io.BytesIO(heic)).info["thumbnails"] == [320]
    assert libheif.thumbnail(heic, 1, 1).shape == (320, 240, 3)
    assert libheif.thumbnail(corpus["uploads/web-avif/000.avif"], 1, 1) is None


def test_the_same_seed_gives_the_same_bytes(corpus):
    assert upload_corpus(seed=0) == corpus


def test_the_kinds_named_are_the_same_bytes_as_in_the_whole_corpus(corpus):
    chosen = upload_corpus(seed=0, kinds=("thumbnail", "web-avif"))
    assert sorted(chosen) == ["uploads/thumbnail/000.jpg", "uploads/thumbnail/001.jpg",
                              "uploads/thumbnail/002.jpg", "uploads/web-avif/000.avif"]
    assert chosen == {key: corpus[key] for key in chosen}


def test_each_image_is_drawn_from_its_generator():
    thumbnail = next(kind for kind in MIX if kind.name == "thumbnail")
    screenshot = next(kind for kind in MIX if kind.name == "screenshot-desktop")
    for kind in (thumbnail, screenshot):
        drawn = {upload_image(kind, np.random.default_rng(seed)) for seed in (0, 1, 2)}
        assert len(drawn) == 3


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_the_jobs_decoder_takes_every_upload_to_the_models_size(corpus, key):
    image_format, _, _, displayed, _ = EXPECTED[key]
    limits = InferenceConfig()
    decoded = decode_image(corpus[key], 224, 224, 3, max_bytes=limits.max_image_bytes,
                           max_pixels=limits.max_image_pixels)
    assert decoded.pixels.shape == (224, 224, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.format, (decoded.width, decoded.height)) == (image_format, displayed)
