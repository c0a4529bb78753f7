"""Objects' canonical ids (the URI that names an object in the graph, whatever URI read it),
and reading a prefix's objects with their bytes in bulk (the training job).

A canonical S3 URI is `s3://` + bucket + `/` + the key exactly as S3 has it: `?`, `#`, `%`, `//`,
a leading `/` and `..` segments are part of the key, never URL syntax, so a canonical URI is
never URL-parsed, only split at the first `/` after the bucket.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import InputConfig
from imagegraph.errors import JobError
from imagegraph.storage import hadoop_fs


def canonical_uri(path: Column) -> Column:
    """The object's id in the graph, as a Spark expression: `s3://bucket/key` for s3, s3a and
    s3n paths; `file:///abs/path` for local files (Hadoop writes `file:/abs/path`); anything
    else unchanged."""
    return F.regexp_replace(F.regexp_replace(path, r"^s3[an]?://", "s3://"),
                            r"^file:/+", "file:///")


S3_SCHEMES = ("s3", "s3a", "s3n")


def scheme_of(uri: str) -> str:
    """The scheme of `uri` ('s3', 'file', ...), '' when it has none; nothing else is parsed."""
    scheme, separator, _ = uri.partition("://")
    return scheme.lower() if separator and "/" not in scheme else ""


def bucket_and_key(uri: str) -> tuple[str, str]:
    """('bucket', 'key') of an s3://, s3a:// or s3n:// URI: the bucket up to the first '/' after
    the scheme, the key everything after it, exactly (`s3://b//x?v=2#y.jpg` -> ('b',
    '/x?v=2#y.jpg')); ('', '/abs/path') of a file:/// URI; ('', uri) of anything else."""
    scheme = scheme_of(uri)
    if scheme in S3_SCHEMES:
        bucket, _, key = uri[len(scheme) + 3:].partition("/")
        return bucket, key
    if scheme == "file":
        return "", uri[len("file://"):]
    return "", uri


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
