"""Objects' canonical ids (the URI that names an object in the graph, whatever URI read it),
and reading a prefix's objects with their bytes in bulk (the training job)."""
from __future__ import annotations

from urllib.parse import urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph import hadoop_fs
from imagegraph.config import InputConfig
from imagegraph.errors import JobError


def canonical_uri(path: Column) -> Column:
    """The object's id in the graph, as a Spark expression: `s3://bucket/key` for s3, s3a and
    s3n paths; `file:///abs/path` for local files (Hadoop writes `file:/abs/path`); anything
    else unchanged."""
    return F.regexp_replace(F.regexp_replace(path, r"^s3[an]?://", "s3://"),
                            r"^file:/+", "file:///")


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
