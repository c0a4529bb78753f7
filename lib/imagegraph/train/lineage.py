"""What made a model: the `lineage` object of its metadata.json (docs/TRAINING.md) - the
training input, a fingerprint of the images in each split, the code's version and the settings.

`data_fingerprint` is computed in Spark, never collecting an image list on the driver: the
images are grouped by split and the first two hex digits of their sha256, each group hashed
sorted, and the driver hashes the (at most 3 x 256) group digests in order.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from imagegraph import __version__
from imagegraph.config import TrainingConfig
from imagegraph.train.data import TEST, TRAIN, VALIDATION, Augmentation

GIT_COMMIT_ENV = "IMAGEGRAPH_GIT_COMMIT"
"""The environment variable holding the commit of the code, recorded when set (the driver's
environment; imagegraph never runs git)."""
SPLITS = (TRAIN, VALIDATION, TEST)


def data_fingerprint(dataset: DataFrame) -> tuple[str, dict[str, int]]:
    """(sha256 hex, images per split) of `dataset` (columns `sha256` of each image's bytes,
    `label_name`, `split`). The hash is over lines `<split> <bucket> <images> <digest>`, in
    split order (train, validation, test) then bucket order, where a bucket is the images of
    a split whose sha256 starts with those two hex digits and its digest is the sha256 of its
    `<sha256> <label>` lines sorted, joined by newlines. Paths and row order do not count;
    every byte of every image, its label and its split do."""
    entry = F.concat_ws(" ", "sha256", "label_name")
    rows = (dataset.groupBy("split", F.substring("sha256", 1, 2).alias("bucket"))
            .agg(F.count(F.lit(1)).alias("images"),
                 F.sha2(F.concat_ws("\n", F.sort_array(F.collect_list(entry))), 256)
                 .alias("digest"))
            .collect())
    rows.sort(key=lambda row: (SPLITS.index(row["split"]), row["bucket"]))
    text = "\n".join(f"{r['split']} {r['bucket']} {r['images']} {r['digest']}" for r in rows)
    counts = {split: sum(r["images"] for r in rows if r["split"] == split) for split in SPLITS}
    return hashlib.sha256(text.encode()).hexdigest(), counts


def lineage(training: TrainingConfig, input_uri: str, fingerprint: str,
            images: dict[str, int], trained_at: datetime) -> dict[str, object]:
    """metadata.json's `lineage`: the data (input URI, fingerprint, images per split), the
    code (imagegraph version; `git_commit` only when `GIT_COMMIT_ENV` is set) and the
    settings that trained the model; `trained_at` as UTC ISO 8601 to the second."""
    record: dict[str, object] = {
        "training_input": input_uri, "data_fingerprint": fingerprint, "images": images,
        "imagegraph_version": __version__,
        "trained_at": trained_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": training.seed, "base": training.base, "weights": training.weights,
        "epochs": training.epochs, "fine_tune_epochs": training.fine_tune_epochs,
        "unfreeze_layers": training.unfreeze_layers, "learning_rate": training.learning_rate,
        "fine_tune_learning_rate": training.fine_tune_learning_rate,
        "warmup_epochs": training.warmup_epochs,
        "final_learning_rate_fraction": training.final_learning_rate_fraction,
        "learning_rate_scaling": training.learning_rate_scaling,
        "early_stopping_patience": training.early_stopping_patience,
        "batch_size": training.batch_size, "holdout_percent": training.holdout_percent,
        "test_percent": training.test_percent,
        "augmentation": asdict(Augmentation.from_config(training)),
        "class_weighting": training.class_weighting, "pixel_feed": training.pixel_feed,
        "workers": training.workers,
    }
    commit = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if commit:
        record["git_commit"] = commit
    return record
