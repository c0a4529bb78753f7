"""Input objects: listing and reading them in bulk, and their canonical ids."""
from __future__ import annotations

from urllib.parse import urlsplit

from pyspark.sql import DataFrame, SparkSession

from imagegraph import hadoop_fs
from imagegraph.config import InputConfig
from imagegraph.errors import JobError


def canonical_uri(path: str) -> str:
    """The object's id in the graph: `s3://bucket/key` for s3, s3a and s3n paths;
    `file:///abs/path` for local files; anything else unchanged."""
    parts = urlsplit(path)
    if parts.scheme in ("s3", "s3a", "s3n"):
        return f"s3://{parts.netloc}{parts.path}"
    if parts.scheme == "file":
        return f"file://{parts.path}"
    return path


def bucket_and_key(uri: str) -> tuple[str, str]:
    """('bucket', 'key') of a canonical s3:// URI; ('', path) for other schemes."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return parts.netloc, parts.path.lstrip("/")
    return "", parts.path


def read_images(spark: SparkSession, uri: str, options: InputConfig) -> DataFrame:
    """Objects under `uri` as rows (path: string, length: long bytes, content: binary).

    Raises `JobError` when nothing exists at `uri`.
    """
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"input {uri} does not exist (no object or prefix at that URI)")
    return (spark.read.format("binaryFile")
            .option("pathGlobFilter", options.glob)
            .option("recursiveFileLookup", str(options.recursive).lower())
            .load(uri)
            .select("path", "length", "content"))
