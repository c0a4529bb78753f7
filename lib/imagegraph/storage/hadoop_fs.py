"""Files at any Hadoop URI (s3://, s3a://, file://, hdfs://) from the driver, through Spark's
JVM, so the job reads and writes models exactly where Spark reads and writes data."""
from __future__ import annotations

import os
from datetime import datetime, timezone

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from imagegraph.errors import JobError


def _fs_and_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def exists(spark: SparkSession, uri: str) -> bool:
    """True when `uri` names an existing file, directory or non-empty S3 prefix.

    Raises `JobError` when the question cannot be answered: the bucket does not exist, the
    store cannot be reached, the scheme has no file system.
    """
    try:
        fs, path = _fs_and_path(spark, uri)
        return bool(fs.exists(path))
    except Py4JJavaError as exc:
        java = exc.java_exception
        kind = java.getClass().getSimpleName()
        message = " ".join(str(java.getMessage()).split())[:400]
        if kind == "UnknownStoreException":
            raise JobError(f"{uri}: the bucket does not exist ({message})") from None
        raise JobError(f"cannot reach {uri}: {kind}: {message}") from None


def modification_time(spark: SparkSession, uri: str) -> datetime:
    """When the file `uri` was last modified, as an aware UTC datetime."""
    fs, path = _fs_and_path(spark, uri)
    return datetime.fromtimestamp(fs.getFileStatus(path).getModificationTime() / 1000,
                                  timezone.utc)


def list_files(spark: SparkSession, uri: str) -> list[str]:
    """The files under the directory `uri`, at any depth, as sorted '/'-separated paths
    relative to it (`variables/variables.index`); empty directories are not listed."""
    fs, path = _fs_and_path(spark, uri)
    base = fs.makeQualified(path).toUri()
    found = fs.listFiles(path, True)
    names = []
    while found.hasNext():
        names.append(str(base.relativize(found.next().getPath().toUri()).getPath()))
    return sorted(names)


def list_directories(spark: SparkSession, uri: str) -> list[str]:
    """The names of the directories directly under `uri` (S3: its common prefixes), sorted;
    empty when `uri` does not exist."""
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(str(status.getPath().getName()) for status in fs.listStatus(path)
                  if status.isDirectory())


def _copy(spark: SparkSession, source_uri: str, target_uri: str) -> None:
    # FileUtil.copy streams between any two file systems; S3A's own copyFromLocalFile
    # rejects local paths it cannot relativise ("Cannot get relative path").
    source_fs, source = _fs_and_path(spark, source_uri)
    target_fs, target = _fs_and_path(spark, target_uri)
    jvm = spark.sparkContext._jvm
    jvm.org.apache.hadoop.fs.FileUtil.copy(source_fs, source, target_fs, target, False, True,
                                           spark.sparkContext._jsc.hadoopConfiguration())


def copy_from_local(spark: SparkSession, local_path: str, uri: str) -> None:
    """Copy the local file `local_path` to the file `uri`, replacing what is there."""
    _copy(spark, "file://" + os.path.abspath(local_path), uri)


def copy_to_local(spark: SparkSession, uri: str, local_path: str) -> None:
    """Copy the file at `uri` to the local file `local_path`."""
    _copy(spark, uri, "file://" + os.path.abspath(local_path))


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write `text` (UTF-8) to the file `uri`, replacing what is there."""
    write_bytes(spark, uri, text.encode("utf-8"))


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write `data` to the file `uri`, replacing what is there."""
    fs, path = _fs_and_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def delete(spark: SparkSession, uri: str) -> None:
    """Delete the file or directory tree at `uri`, if there is one."""
    fs, path = _fs_and_path(spark, uri)
    fs.delete(path, True)


def read_text(spark: SparkSession, uri: str) -> str:
    """The UTF-8 text of the file `uri`."""
    return spark.read.text(uri, wholetext=True).first()[0]
