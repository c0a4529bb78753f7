"""Reading a model artifact from any Hadoop URI on the driver, for shipping to the workers."""
from __future__ import annotations

import os
import tempfile

from pyspark.sql import SparkSession

from imagegraph.errors import JobError
from imagegraph.model.artifact import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SAVED_MODEL,
    SAVED_MODEL_DIR,
    SAVED_MODEL_FILE,
    ModelMetadata,
    model_format,
)
from imagegraph.storage import hadoop_fs


def read_model_artifact(spark: SparkSession, uri: str, embedding: bool = False
                        ) -> tuple[ModelMetadata, dict[str, bytes]]:
    """The metadata and the files ({relative name: bytes}) of the model exported at `uri`: a
    `.keras` file, or every file of a SavedModel directory (`saved_model/variables/...`).

    Raises `JobError` when `uri` holds no complete artifact, both kinds of model, unreadable
    metadata, or a SavedModel while `embedding` is asked for (it has no layer to read it from).
    """
    uri = uri.rstrip("/")
    present = {name for name in (MODEL_FILE, SAVED_MODEL_FILE, LABELS_FILE, METADATA_FILE)
               if hadoop_fs.exists(spark, f"{uri}/{name}")}
    missing = ([] if present & {MODEL_FILE, SAVED_MODEL_FILE} else [MODEL_FILE]) + [
        name for name in (LABELS_FILE, METADATA_FILE) if name not in present]
    if missing:
        raise JobError(f"model {uri} not found: missing {', '.join(missing)} (expected what "
                       f"jobs/train.py wrote as --output, or a SavedModel in {SAVED_MODEL_DIR}/ "
                       f"in place of {MODEL_FILE})")
    try:
        kind = model_format(present)
    except ValueError as exc:
        raise JobError(f"model {uri} holds {exc}") from None
    if kind == SAVED_MODEL and embedding:
        raise JobError(f"model {uri} is a SavedModel: inference.embedding needs a {MODEL_FILE} "
                       "model (a SavedModel's serving signature gives only the probabilities, "
                       "no penultimate layer)")
    if kind == SAVED_MODEL:
        model_names = [f"{SAVED_MODEL_DIR}/{name}"
                       for name in hadoop_fs.list_files(spark, f"{uri}/{SAVED_MODEL_DIR}")]
    else:
        model_names = [MODEL_FILE]
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="imagegraph-model-") as local:
        for index, name in enumerate([LABELS_FILE, METADATA_FILE, *model_names]):
            path = os.path.join(local, str(index))
            hadoop_fs.copy_to_local(spark, f"{uri}/{name}", path)
            with open(path, "rb") as handle:
                files[name] = handle.read()
    try:
        metadata = ModelMetadata.from_json(files[METADATA_FILE].decode("utf-8"), uri=uri)
    except (ValueError, TypeError, KeyError) as exc:
        raise JobError(f"model {uri}: {METADATA_FILE} is not valid: {exc}") from None
    return metadata, files
