"""Classification inside Spark: an iterator pandas UDF that decodes image bytes, runs the CNN
and keeps the top-k classes, or says why an object could not be classified.

Decoding the next Arrow batch runs on a thread while the CNN classifies the current one
(Pillow and TensorFlow both release the GIL for their heavy work).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (ArrayType, FloatType, IntegerType, StringType, StructField,
                               StructType)

from imagegraph.decode import UndecodableImage, decode_image
from imagegraph.model_artifact import ModelMetadata
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
    StructField("embedding", ArrayType(FloatType()), True),
])
"""What `classify_images` returns per object: its canonical `uri` (see `sources`), whether it
was classified, and if so its size in pixels, the top-k `labels`/`scores`, best first, and
(when asked for) the penultimate layer's `embedding`."""


@dataclass(frozen=True)
class InferenceSettings:
    """Per-run settings shipped to the workers. Limits are bytes and pixels; `batch_size` is
    images per model call; `threads` sizes TensorFlow's pools (the task's cores)."""

    top_k: int
    batch_size: int
    max_image_bytes: int
    max_image_pixels: int
    threads: int
    embedding: bool = False


@dataclass
class DecodedBatch:
    """One Arrow batch after decoding: a row per object, and the pixels of those that decoded
    (`decoded[i]` is the row index of `pixels[i]`)."""

    rows: list[dict]
    decoded: list[int]
    pixels: list[np.ndarray]


def decode_batch(paths: Iterable[str], contents: Iterable, metadata: ModelMetadata,
                 settings: InferenceSettings) -> DecodedBatch:
    """Decode every object of a batch; undecodable ones get their reason, never an exception."""
    batch = DecodedBatch([], [], [])
    for path, content in zip(paths, contents):
        data = bytes(content) if content is not None else b""
        uri = canonical_uri(path)
        bucket, key = bucket_and_key(uri)
        row = {"uri": uri, "bucket": bucket, "key": key, "status": STATUS_OK, "reason": None,
               "width": None, "height": None, "format": None,
               "sha256": hashlib.sha256(data).hexdigest(), "labels": None, "scores": None,
               "embedding": None}
        try:
            image = decode_image(data, metadata.input_height, metadata.input_width,
                                 metadata.channels, settings.max_image_bytes,
                                 settings.max_image_pixels)
        except UndecodableImage as exc:
            row["status"], row["reason"] = STATUS_UNDECODABLE, exc.reason
        else:
            row.update(width=image.width, height=image.height, format=image.format)
            batch.decoded.append(len(batch.rows))
            batch.pixels.append(image.pixels)
        batch.rows.append(row)
    return batch


def classify_decoded(model, batch: DecodedBatch, metadata: ModelMetadata,
                     settings: InferenceSettings) -> pd.DataFrame:
    """Run `model` (a `model_cache.LoadedModel`) over a decoded batch in model-sized chunks;
    one row per object, in input order, with the columns of `CLASSIFICATION`."""
    for start in range(0, len(batch.pixels), settings.batch_size):
        chunk = np.stack(batch.pixels[start:start + settings.batch_size])
        probabilities, embeddings = model.predict(chunk)
        for offset, scores in enumerate(probabilities):
            best = np.argsort(-scores)[:settings.top_k]
            row = batch.rows[batch.decoded[start + offset]]
            row["labels"] = [metadata.classes[i] for i in best]
            row["scores"] = [float(scores[i]) for i in best]
            if embeddings is not None:
                row["embedding"] = embeddings[offset].astype(np.float32).tolist()
    return pd.DataFrame(batch.rows, columns=[f.name for f in CLASSIFICATION.fields])


def classify_stream(model, batches: Iterator[tuple[pd.Series, pd.Series]],
                    metadata: ModelMetadata, settings: InferenceSettings
                    ) -> Iterator[pd.DataFrame]:
    """Classify (paths, contents) batches in order, decoding batch n+1 on a thread while the
    model runs on batch n."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagegraph-decode") as pool:
        pending = None
        for paths, contents in batches:
            upcoming = pool.submit(decode_batch, paths, contents, metadata, settings)
            if pending is not None:
                yield classify_decoded(model, pending.result(), metadata, settings)
            pending = upcoming
        if pending is not None:
            yield classify_decoded(model, pending.result(), metadata, settings)


def classify_images(path: Column, content: Column, model_files, metadata: ModelMetadata,
                    settings: InferenceSettings) -> Column:
    """A Column of `CLASSIFICATION` structs for the objects at `path` with bytes `content`.

    `model_files` is a Broadcast of {artifact file name: bytes}; each Python worker loads the
    model from it once (see `model_cache`).
    """

    @pandas_udf(CLASSIFICATION)
    def classify(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        from imagegraph.model_cache import WORKER_MODELS  # the worker's own cache, not a copy

        model = WORKER_MODELS.get(metadata, model_files.value, settings.batch_size,
                                  settings.embedding, settings.threads)
        yield from classify_stream(model, batches, metadata, settings)

    return classify(path, content)
