"""Classification inside Spark: an iterator pandas UDF that decodes image bytes, runs the CNN
and keeps the top-k classes, or says why an object could not be classified."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (ArrayType, FloatType, IntegerType, StringType, StructField,
                               StructType)

from imagegraph.decode import UndecodableImage, decode_image
from imagegraph.model_artifact import ModelMetadata, preprocess
from imagegraph.sources import bucket_and_key, canonical_uri

STATUS_OK = "ok"
STATUS_UNDECODABLE = "undecodable"

CLASSIFICATION = StructType([
    StructField("uri", StringType(), True),
    StructField("bucket", StringType(), True),
    StructField("key", StringType(), True),
    StructField("status", StringType(), True),
    StructField("reason", StringType(), True),
    StructField("width", IntegerType(), True),
    StructField("height", IntegerType(), True),
    StructField("format", StringType(), True),
    StructField("sha256", StringType(), True),
    StructField("labels", ArrayType(StringType()), True),
    StructField("scores", ArrayType(FloatType()), True),
])
"""What `classify_images` returns per object: its canonical `uri` (see `sources`), whether it
was classified, and if so its size in pixels and the top-k `labels`/`scores`, best first."""


@dataclass(frozen=True)
class InferenceSettings:
    """Per-run settings shipped to the workers. Limits are bytes and pixels."""

    top_k: int
    batch_size: int
    max_image_bytes: int
    max_image_pixels: int
    threads: int


def classify_contents(model, paths: pd.Series, contents: pd.Series, metadata: ModelMetadata,
                      settings: InferenceSettings) -> pd.DataFrame:
    """Classify a batch of objects (Spark paths and their bytes) with a loaded Keras `model`.

    Returns one row per input, in order, with the columns of `CLASSIFICATION`.
    """
    rows: list[dict] = []
    decoded_rows: list[int] = []
    pixels: list[np.ndarray] = []
    for path, content in zip(paths, contents):
        data = bytes(content) if content is not None else b""
        uri = canonical_uri(path)
        bucket, key = bucket_and_key(uri)
        row = {"uri": uri, "bucket": bucket, "key": key, "status": STATUS_OK, "reason": None, "width": None, "height": None,
               "format": None, "sha256": hashlib.sha256(data).hexdigest(),
               "labels": None, "scores": None}
        try:
            image = decode_image(data, metadata.input_height, metadata.input_width,
                                 metadata.channels, settings.max_image_bytes,
                                 settings.max_image_pixels)
        except UndecodableImage as exc:
            row["status"], row["reason"] = STATUS_UNDECODABLE, exc.reason
        else:
            row.update(width=image.width, height=image.height, format=image.format)
            decoded_rows.append(len(rows))
            pixels.append(image.pixels)
        rows.append(row)
    for start in range(0, len(pixels), settings.batch_size):
        batch = preprocess(np.stack(pixels[start:start + settings.batch_size]),
                           metadata.preprocessing)
        probabilities = np.asarray(model(batch, training=False))
        for offset, scores in enumerate(probabilities):
            best = np.argsort(-scores)[:settings.top_k]
            row = rows[decoded_rows[start + offset]]
            row["labels"] = [metadata.classes[i] for i in best]
            row["scores"] = [float(scores[i]) for i in best]
    return pd.DataFrame(rows, columns=[f.name for f in CLASSIFICATION.fields])


def classify_images(path: Column, content: Column, model_files, metadata: ModelMetadata,
                    settings: InferenceSettings) -> Column:
    """A Column of `CLASSIFICATION` structs for the objects at `path` with bytes `content`.

    `model_files` is a Broadcast of {artifact file name: bytes}; each Python worker loads the
    model from it once (see `model_cache`).
    """

    @pandas_udf(CLASSIFICATION)
    def classify(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        from imagegraph.model_cache import WORKER_MODELS  # the worker's own cache, not a copy

        model = WORKER_MODELS.get(metadata.model_id, model_files.value, settings.threads)
        for paths, contents in batches:
            yield classify_contents(model, paths, contents, metadata, settings)

    return classify(path, content)
