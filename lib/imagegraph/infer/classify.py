"""Classification inside Spark: an iterator pandas UDF that reads objects, decodes them, runs
the CNN and keeps the top-k classes, or says why an object could not be classified.

Reading and decoding the next Arrow batch runs on threads while the CNN classifies the current
one (boto3's socket reads, Pillow and TensorFlow all release the GIL for their heavy work).
"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from imagegraph.imaging.decode import DecoderOutOfMemory, UndecodableImage, decode_image
from imagegraph.imaging.perceptual_hash import perceptual_hash
from imagegraph.model.artifact import ModelMetadata
from imagegraph.model.temperature import scale_scores
from imagegraph.runs.progress import ProgressCounters
from imagegraph.storage.object_reader import (
    ObjectUnreadable,
    ReaderSettings,
    read_object,
    unquoted_etag,
)
from imagegraph.storage.sources import bucket_and_key

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STAGE_READ = "read"
STAGE_DECODE = "decode"

CLASSIFICATION = StructType([
    StructField("uri", StringType(), True),
    StructField("bucket", StringType(), True),
    StructField("key", StringType(), True),
    StructField("status", StringType(), True),
    StructField("stage", StringType(), True),
    StructField("reason", StringType(), True),
    StructField("bytes", LongType(), True),
    StructField("width", IntegerType(), True),
    StructField("height", IntegerType(), True),
    StructField("format", StringType(), True),
    StructField("sha256", StringType(), True),
    StructField("etag", StringType(), True),
    StructField("version_id", StringType(), True),
    StructField("labels", ArrayType(StringType()), True),
    StructField("scores", ArrayType(FloatType()), True),
    StructField("embedding", ArrayType(FloatType()), True),
    StructField("phash", LongType(), True),
])
"""What `classify_images` returns per object: its canonical `uri` (see `sources`), its `etag`
(unquoted: the one S3 answered the read with, else the listed one, else null), its
`version_id` (the S3 VersionId the read was answered with, "null" included: see
`object_reader`; null when S3 gave none, for file:// and when the read failed), whether it
was classified, and if so its size in bytes and pixels, the top-k `labels`/`scores`, best first,
(when asked for) the penultimate layer's `embedding` less the model's embedding centre
(`ModelMetadata.centred`), and the decoded pixels' 64-bit
perceptual hash `phash` (see `imaging.perceptual_hash`); if not, the `stage` (read or decode)
that failed and the `reason` (whose retry class says whether a later run tries it again: see
`imagegraph.dead_letters`)."""


@dataclass(frozen=True)
class InferenceSettings:
    """Per-run settings shipped to the workers. `max_image_pixels` is the decoder's pixel
    limit (the byte limit is `reader.max_bytes`); `batch_size` is images per model call;
    `threads` sizes TensorFlow's pools (the task's cores); `reader` says how objects are read,
    `reader.threads` at once per task; `runtime` is 'tflite' or 'tensorflow' (see
    `model.cache.LoadedModel`); `precision` 'int8' runs the int8 model shipped with the files
    (see `precision`), 'float32' the artifact's model; `temperature` > 0 divides the model's
    logits before the top-k are taken (`model.temperature`; 1.0: the scores as the model gives
    them)."""

    top_k: int
    batch_size: int
    max_image_pixels: int
    threads: int
    reader: ReaderSettings
    embedding: bool = False
    runtime: str = "tensorflow"
    precision: str = "float32"
    temperature: float = 1.0


def prepare_object(uri: str, size: int | None, metadata: ModelMetadata,
                   settings: InferenceSettings, etag: str | None = None
                   ) -> tuple[dict, np.ndarray | None]:
    """Read and decode one object whose listed `size` (bytes) and `etag` are given or None:
    its `CLASSIFICATION` row (labels not yet filled) and its pixels, or None with the failure
    recorded in the row. Never raises for bad objects."""
    bucket, key = bucket_and_key(uri)
    row = {"uri": uri, "bucket": bucket, "key": key, "status": STATUS_OK, "stage": None,
           "reason": None, "bytes": size, "width": None, "height": None,
           "format": None, "sha256": None, "etag": unquoted_etag(etag), "version_id": None,
           "labels": None, "scores": None, "embedding": None, "phash": None}
    try:
        read = read_object(uri, size, settings.reader, etag)
    except ObjectUnreadable as exc:
        row.update(status=STATUS_FAILED, stage=STAGE_READ, reason=exc.reason)
        return row, None
    data = read.data
    row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
               etag=read.etag or row["etag"], version_id=read.version_id)
    try:
        image = decode_image(data, metadata.input_height, metadata.input_width,
                             metadata.channels, settings.reader.max_bytes,
                             settings.max_image_pixels)
    except (UndecodableImage, DecoderOutOfMemory) as exc:
        row.update(status=STATUS_FAILED, stage=STAGE_DECODE, reason=exc.reason)
        return row, None
    row.update(width=image.width, height=image.height, format=image.format,
               phash=perceptual_hash(image.pixels))
    return row, image.pixels


def classify_prepared(model, prepared: list[tuple[dict, np.ndarray | None]],
                      metadata: ModelMetadata, settings: InferenceSettings) -> pd.DataFrame:
    """Run `model` (a `model.cache.LoadedModel`) over the decoded objects of a batch in
    model-sized chunks; one row per object, in input order, with the columns of
    `CLASSIFICATION`, the scores scaled by `settings.temperature`."""
    rows = [row for row, _ in prepared]
    decoded = [(row, pixels) for row, pixels in prepared if pixels is not None]
    for start in range(0, len(decoded), settings.batch_size):
        chunk = decoded[start:start + settings.batch_size]
        probabilities, embeddings = model.predict(np.stack([pixels for _, pixels in chunk]))
        if embeddings is not None:
            embeddings = metadata.centred(embeddings)
        if settings.temperature != 1.0:
            probabilities = scale_scores(probabilities, settings.temperature)
        for offset, scores in enumerate(probabilities):
            best = np.argsort(-scores)[:settings.top_k]
            row = chunk[offset][0]
            row["labels"] = [metadata.classes[i] for i in best]
            row["scores"] = [float(scores[i]) for i in best]
            if embeddings is not None:
                row["embedding"] = embeddings[offset].tolist()
    return pd.DataFrame(rows, columns=[f.name for f in CLASSIFICATION.fields])


@dataclass
class ModelTimes:
    """Seconds a task's model spent classifying (`ran_s`) and waiting for its next batch's
    objects to be read and decoded (`waited_s`), added to as `classify_stream` goes."""

    ran_s: float = 0.0
    waited_s: float = 0.0


def classify_stream(model, batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]],
                    metadata: ModelMetadata, settings: InferenceSettings,
                    times: ModelTimes | None = None) -> Iterator[pd.DataFrame]:
    """Classify (uris, sizes, etags) batches in order. The objects of batch n+1 are read and decoded
    by `settings.reader.threads` threads while the model runs on batch n; `times` (if given)
    is added the model's seconds of each."""
    times = times or ModelTimes()

    def classified(futures: list[Future]) -> pd.DataFrame:
        started = time.perf_counter()
        prepared = [future.result() for future in futures]
        decoded = time.perf_counter()
        frame = classify_prepared(model, prepared, metadata, settings)
        times.waited_s += decoded - started
        times.ran_s += time.perf_counter() - decoded
        return frame

    with ThreadPoolExecutor(max_workers=settings.reader.threads,
                            thread_name_prefix="imagegraph-read") as pool:
        pending = None
        for uris, sizes, etags in batches:
            upcoming = [pool.submit(prepare_object, uri,
                                    None if pd.isna(size) else int(size), metadata, settings,
                                    None if pd.isna(etag) else etag)
                        for uri, size, etag in zip(uris, sizes, etags)]
            if pending is not None:
                yield classified(pending)
            pending = upcoming
        if pending is not None:
            yield classified(pending)


def classify_images(uri: Column, size: Column, etag: Column, model_files,
                    metadata: ModelMetadata, settings: InferenceSettings,
                    counters: ProgressCounters) -> Column:
    """A Column of `CLASSIFICATION` structs for the objects at canonical `uri` whose listed
    `size` (bytes) and `etag` (may be null) are given; the workers read the objects themselves
    (see `object_reader.read_object`) and add what they processed and failed, and their
    models' `ModelTimes`, to `counters`.

    `model_files` is a Broadcast of {artifact file name: bytes}; each Python worker loads the
    model from it once (see `model.cache`).
    """

    @pandas_udf(CLASSIFICATION)
    def classify(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]
                 ) -> Iterator[pd.DataFrame]:
        from imagegraph.model.cache import WORKER_MODELS  # the worker's own cache, not a copy

        model = WORKER_MODELS.get(metadata, model_files.value, settings.batch_size,
                                  settings.embedding, settings.threads, settings.runtime,
                                  settings.precision)
        times = ModelTimes()
        for frame in classify_stream(model, batches, metadata, settings, times):
            counters.add(len(frame), int((frame["status"] != STATUS_OK).sum()))
            yield frame
        counters.add_model_times(times.ran_s, times.waited_s)

    return classify(uri, size, etag)
