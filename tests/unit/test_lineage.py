"""The data fingerprint over images decoded and split as training does, and metadata.json's
lineage record."""
import hashlib
import io
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from imagegraph import __version__
from imagegraph.config import load_config
from imagegraph.train.data import labeled_images
from imagegraph.train.lineage import GIT_COMMIT_ENV, data_fingerprint, lineage

CONFIG = load_config(None)


def _bmp(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="BMP")
    return out.getvalue()


IMAGES = {f"{'cat' if n % 2 else 'dog'}/{n}.bmp": _bmp(n) for n in range(16)}


def _write(root, images: dict[str, bytes]) -> str:
    for name, data in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return f"file://{root}"


def _fingerprint(spark, uri: str):
    return data_fingerprint(labeled_images(spark, CONFIG, uri))


@pytest.fixture(scope="module")
def original(spark, tmp_path_factory):
    return _fingerprint(spark, _write(tmp_path_factory.mktemp("a") / "train", IMAGES))


def test_the_fingerprint_is_the_documented_hash_and_counts_every_image(spark, tmp_path):
    frame = labeled_images(spark, CONFIG, _write(tmp_path, IMAGES))
    fingerprint, counts = data_fingerprint(frame)
    rows = frame.select("sha256", "label_name", "split").collect()
    assert {r["sha256"] for r in rows} == {hashlib.sha256(d).hexdigest() for d in IMAGES.values()}
    lines = []
    for split in ("train", "validation", "test"):
        buckets: dict[str, list[str]] = {}
        for r in rows:
            if r["split"] == split:
                buckets.setdefault(r["sha256"][:2], []).append(f"{r['sha256']} {r['label_name']}")
        for bucket, entries in sorted(buckets.items()):
            digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
            lines.append(f"{split} {bucket} {len(entries)} {digest}")
    assert fingerprint == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert counts == {s: sum(r["split"] == s for r in rows)
                      for s in ("train", "validation", "test")}
    assert sum(counts.values()) == 16 and counts["train"] > 0


def test_the_same_images_under_other_paths_and_names_give_the_same_fingerprint(
        spark, tmp_path, original):
    moved = {f"x/y/{name.split('/')[0]}/renamed-{15 - i}.bmp": data
             for i, (name, data) in enumerate(reversed(IMAGES.items()))}
    assert _fingerprint(spark, _write(tmp_path / "elsewhere", moved)) == original


def test_one_changed_byte_or_label_changes_the_fingerprint(spark, tmp_path, original):
    changed = dict(IMAGES)
    data = bytearray(changed["cat/1.bmp"])
    data[-1] ^= 1  # one pixel one level brighter or darker: decodes, same split
    changed["cat/1.bmp"] = bytes(data)
    fingerprint, counts = _fingerprint(spark, _write(tmp_path / "byte", changed))
    assert counts == original[1] and fingerprint != original[0]
    relabeled = {("cat/0.bmp" if name == "dog/0.bmp" else name): data
                 for name, data in IMAGES.items()}
    fingerprint, counts = _fingerprint(spark, _write(tmp_path / "label", relabeled))
    assert counts == original[1] and fingerprint != original[0]


def test_lineage_records_the_input_the_code_and_every_setting(monkeypatch):
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    training = load_config(None, {
        "training.seed": 3, "training.learning_rate": 0.01, "training.epochs": 5,
        "training.fine_tune_learning_rate": 0.0005, "training.fine_tune_epochs": 2,
        "training.batch_size": 16, "training.base": "mobilenet_v2", "training.color_mode": "rgb",
        "training.weights": "s3://b/w.h5", "training.augment_flip": True,
        "training.augment_crop": 0.1, "training.class_weighting": "none",
        "training.pixel_feed": "float32", "training.workers": 2}).training
    at = datetime(2026, 12, 6, 20, 1, 2, 345678, tzinfo=timezone.utc)
    record = lineage(training, "s3a://b/train/", "f" * 64, {"train": 5, "validation": 2,
                                                             "test": 1}, at)
    assert record == {
        "training_input": "s3a://b/train/", "data_fingerprint": "f" * 64,
        "images": {"train": 5, "validation": 2, "test": 1},
        "imagegraph_version": __version__, "trained_at": "2026-12-06T20:01:02Z",
        "seed": 3, "base": "mobilenet_v2", "weights": "s3://b/w.h5", "epochs": 5,
        "fine_tune_epochs": 2, "unfreeze_layers": 20, "learning_rate": 0.01,
        "fine_tune_learning_rate": 0.0005, "warmup_epochs": 1.0,
        "final_learning_rate_fraction": 0.1, "learning_rate_scaling": "linear",
        "early_stopping_patience": 0, "batch_size": 16,
        "holdout_percent": 20, "test_percent": 10,
        "augmentation": {"flip": True, "crop": 0.1, "brightness": 0.0, "contrast": 0.0},
        "class_weighting": "none", "pixel_feed": "float32", "workers": 2}
    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abc\n")
    assert lineage(training, "u", "f", {}, at)["git_commit"] == "0123abc"
