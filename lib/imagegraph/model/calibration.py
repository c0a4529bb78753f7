"""The images int8 quantization is calibrated and checked on: uint8 pixels as the decoder gives
them, in two disjoint parts.

- `calibration`: images whose activations set the int8 model's ranges;
- `check`: other images on which its top-1 answers are compared with float32's, with their class
  indices when they are known.

Training stores a sample in the artifact (`CALIBRATION_FILE`: training images to calibrate on,
held-out images and their labels to check with; `store_training_sample`); for an artifact
without one (a user's SavedModel) the driver draws one from the job's own input before the run
(`imagegraph.infer.precision.draw_from_input`), without labels.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, replace

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.model.artifact import ModelMetadata
from imagegraph.storage import hadoop_fs

CALIBRATION_FILE = "calibration.npz"
"""The artifact's calibration sample: arrays `calibration`, `check` (uint8 pixels (n, height,
width, channels)) and `check_labels` (int32 class indices, one per check image)."""
ARTIFACT = "artifact"
INPUT = "input"
"""Where a sample came from: the model artifact (stored by training), or the job's input."""


@dataclass(frozen=True)
class CalibrationSample:
    """uint8 pixels (n, height, width, channels) to calibrate on and to check with; the check
    images' class indices (into the model's classes) or None; `source` ARTIFACT or INPUT."""

    calibration: np.ndarray
    check: np.ndarray
    check_labels: np.ndarray | None
    source: str

    def describe(self) -> str:
        """`artifact: 200 images to calibrate, 200 labeled to check`, as the report says it."""
        labeled = " labeled" if self.check_labels is not None else ""
        return (f"{self.source}: {len(self.calibration)} images to calibrate, "
                f"{len(self.check)}{labeled} to check")

    def to_npz(self) -> bytes:
        """The sample as the content of `CALIBRATION_FILE`."""
        buffer = io.BytesIO()
        labels = self.check_labels if self.check_labels is not None else np.zeros(0, np.int32)
        np.savez_compressed(buffer, calibration=self.calibration, check=self.check,
                            check_labels=labels.astype(np.int32))
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, content: bytes) -> "CalibrationSample":
        """The sample stored as `CALIBRATION_FILE` content (labels absent when none stored)."""
        with np.load(io.BytesIO(content)) as arrays:
            labels = arrays["check_labels"]
            return cls(arrays["calibration"], arrays["check"],
                       labels if len(labels) == len(arrays["check"]) and len(labels) else None,
                       ARTIFACT)


def store_training_sample(spark: SparkSession, dataset: DataFrame, metadata: ModelMetadata,
                          calibration_images: int, check_images: int,
                          pixel_column: str) -> ModelMetadata:
    """Write `CALIBRATION_FILE` into the artifact at `metadata.uri`: up to `calibration_images`
    training images and up to `check_images` held-out images with their labels, drawn in the
    order of their paths' hashes. `dataset` has columns `path`, `pixel_column` (the decoded
    pixels, height*width*channels values 0..255: uint8 bytes, or floats), `label` (the class
    index) and `holdout` (bool). Returns `metadata` with the sizes in its metrics
    (`int8_calibration_images`, `int8_check_images`), for metadata.json."""
    shape = (metadata.input_height, metadata.input_width, metadata.channels)

    def uint8(pixels) -> np.ndarray:
        if isinstance(pixels, (bytes, bytearray)):
            return np.frombuffer(pixels, np.uint8)
        return np.clip(np.rint(np.asarray(pixels, np.float32)), 0, 255).astype(np.uint8)

    def draw(holdout: bool, count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = (dataset.where(F.col("holdout") == holdout).select(pixel_column, "label")
                .orderBy(F.xxhash64("path")).limit(count).collect())
        pixels = np.array([uint8(row[pixel_column]) for row in rows], np.uint8)
        return (pixels.reshape(-1, *shape),
                np.array([row["label"] for row in rows], np.int32))

    calibration, _ = draw(False, calibration_images)
    check, labels = draw(True, check_images)
    sample = CalibrationSample(calibration, check, labels, ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="imagegraph-calibration-") as local:
        path = os.path.join(local, CALIBRATION_FILE)
        with open(path, "wb") as handle:
            handle.write(sample.to_npz())
        hadoop_fs.copy_from_local(spark, path, f"{metadata.uri}/{CALIBRATION_FILE}")
    return replace(metadata, metrics={**metadata.metrics,
                                      "int8_calibration_images": len(calibration),
                                      "int8_check_images": len(check)})


def read_artifact_sample(spark: SparkSession, model_uri: str) -> CalibrationSample | None:
    """The sample stored in the artifact at `model_uri` (any Hadoop URI), or None."""
    uri = f"{model_uri.rstrip('/')}/{CALIBRATION_FILE}"
    if not hadoop_fs.exists(spark, uri):
        return None
    with tempfile.TemporaryDirectory(prefix="imagegraph-calibration-") as local:
        path = os.path.join(local, CALIBRATION_FILE)
        hadoop_fs.copy_to_local(spark, uri, path)
        with open(path, "rb") as handle:
            return CalibrationSample.from_npz(handle.read())
