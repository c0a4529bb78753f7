"""Reading a model artifact from any Hadoop URI on the driver, for shipping to the workers."""
from __future__ import annotations

import os
import tempfile

from pyspark.sql import SparkSession

from imagegraph import hadoop_fs
from imagegraph.errors import JobError
from imagegraph.model_artifact import ARTIFACT_FILES, METADATA_FILE, ModelMetadata


def read_model_artifact(spark: SparkSession, uri: str) -> tuple[ModelMetadata, dict[str, bytes]]:
    """The metadata and the files ({name: bytes}) of the model exported at `uri`.

    Raises `JobError` when `uri` holds no complete artifact or its metadata is unreadable.
    """
    uri = uri.rstrip("/")
    missing = [name for name in ARTIFACT_FILES if not hadoop_fs.exists(spark, f"{uri}/{name}")]
    if missing:
        raise JobError(f"model {uri} not found: missing {', '.join(missing)} "
                       "(expected what jobs/train.py wrote as --output)")
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="imagegraph-model-") as local:
        for name in ARTIFACT_FILES:
            hadoop_fs.copy_to_local(spark, f"{uri}/{name}", os.path.join(local, name))
            with open(os.path.join(local, name), "rb") as handle:
                files[name] = handle.read()
    try:
        metadata = ModelMetadata.from_json(files[METADATA_FILE].decode("utf-8"), uri=uri)
    except (ValueError, TypeError, KeyError) as exc:
        raise JobError(f"model {uri}: {METADATA_FILE} is not valid: {exc}") from None
    return metadata, files
