"""Which objects a run covers: listed under a prefix, read from a manifest or from an S3
Inventory report, filtered by modification time and cut into deterministic shards.

Every source yields the same columns, `OBJECTS`: the object's canonical `uri` (its id in the
graph, see `sources.canonical_uri`), its `size` in bytes, its `modified` time and its `etag`
(unquoted; the workers read that version only, see `object_reader.read_object`), each null
where the source does not say: S3 listings give all three, S3 Inventory reports the ETag when
configured with that field, manifests and other file systems never. Keys are carried exactly
as S3 has them, whatever characters they hold: S3 prefixes are listed with boto3
(`storage.s3_listing`), manifests give keys as they are, S3 Inventory CSV reports URL-encoded
and decoded here as AWS encodes them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import InputConfig, S3Config
from imagegraph.errors import JobError
from imagegraph.sections import parse_time
from imagegraph.storage import hadoop_fs, s3_listing
from imagegraph.storage.object_reader import ReaderSettings
from imagegraph.storage.sources import S3_SCHEMES, canonical_uri, scheme_of

log = logging.getLogger(__name__)

OBJECTS = ("uri", "size", "modified", "etag")
PREFIX, MANIFEST, INVENTORY = "prefix", "manifest", "inventory"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class InputSource:
    """Where the run's objects come from: `kind` is PREFIX, MANIFEST or INVENTORY."""

    kind: str
    uri: str

    def __str__(self) -> str:
        return self.uri if self.kind == PREFIX else f"{self.kind} {self.uri}"


def shard_of(uri: str, count: int) -> int:
    """The shard of `uri` among `count`: the first 60 bits of SHA-256(uri) modulo `count`.
    Stable across runs, listing orders, Spark versions and languages."""
    return int(hashlib.sha256(uri.encode("utf-8")).hexdigest()[:15], 16) % count


def shard_column(uri: Column, count: int) -> Column:
    """`shard_of` as a Spark expression."""
    return F.pmod(F.conv(F.substring(F.sha2(uri, 256), 1, 15), 16, 10).cast("long"),
                  F.lit(count))


def select_objects(spark: SparkSession, source: InputSource, options: InputConfig,
                   s3: S3Config, shard: Shard | None) -> DataFrame:
    """The objects of `source` modified within the configured bounds and, when `shard` is
    given, in that shard: a DataFrame of `OBJECTS`; with a bound, also the rows whose
    `modified` is null (missing or unparseable in a manifest or inventory), which the caller
    counts and leaves out (`without_modified`). S3 prefixes are listed with the S3 settings
    `s3` the workers read with. `JobError` when a bound is set and the source has no modified
    times at all."""
    if source.kind == PREFIX and scheme_of(source.uri) in S3_SCHEMES:
        objects = s3_listing.list_prefix(
            spark, source.uri, options.glob, options.recursive,
            ReaderSettings.from_config(s3, threads=1, max_bytes=0))  # lists, reads no object
    else:
        objects = {PREFIX: _list_hadoop_prefix, MANIFEST: _read_manifest,
                   INVENTORY: _read_inventory}[source.kind](spark, source.uri, options)
    # a row without a (parseable) modified time is kept for the caller to count and leave out
    # (`without_modified`): the filters cannot answer for it
    if options.modified_after:
        objects = objects.where(F.col("modified").isNull() | (
            F.col("modified") >= F.lit(parse_time(options.modified_after))))
    if options.modified_before:
        objects = objects.where(F.col("modified").isNull() | (
            F.col("modified") < F.lit(parse_time(options.modified_before))))
    if shard is not None:
        objects = objects.where(shard_column(F.col("uri"), shard.count) == shard.index)
    return objects.dropDuplicates(["uri"])


def without_modified(options: InputConfig) -> Column:
    """True for the rows of `select_objects` that a modified-after/-before bound could not be
    applied to (no modified time); False for every row when no bound is set."""
    return F.col("modified").isNull() & F.lit(bool(options.modified_after
                                                      or options.modified_before))


def _require(spark: SparkSession, uri: str, what: str) -> None:
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"{what} {uri} does not exist")


def _list_hadoop_prefix(spark: SparkSession, uri: str, options: InputConfig) -> DataFrame:
    """Objects under `uri` (file://, hdfs://: not S3, whose keys Hadoop's `Path` would
    reinterpret), listed by Spark's file index; the content is not read.

    Spark's file scan skips zero-length files (SPARK-26161), so those are found as the files
    of the index that the scan did not return, and listed with size 0 and their modification
    time (the workers then dead-letter them as empty).
    """
    _require(spark, uri, "input")
    listing = (spark.read.format("binaryFile")
               .option("pathGlobFilter", options.glob)
               .option("recursiveFileLookup", str(options.recursive).lower())
               .load(uri))
    scanned = listing.select(canonical_uri(F.col("path")).alias("uri"),
                             F.col("length").alias("size"),
                             F.col("modificationTime").alias("modified"))
    indexed = spark.createDataFrame([(unquote(path),) for path in listing.inputFiles()],
                                    "path string")  # URI-encoded by Hadoop's Path.toUri
    empty_paths = [row["path"] for row in
                   indexed.withColumn("uri", canonical_uri(F.col("path")))
                   .join(scanned, "uri", "left_anti").collect()]
    empty = spark.createDataFrame(
        [(path, 0, hadoop_fs.modification_time(spark, path)) for path in empty_paths],
        "path string, size long, modified timestamp")
    return scanned.unionByName(empty.select(canonical_uri(F.col("path")).alias("uri"),
                                            "size", "modified")) \
        .withColumn("etag", F.lit(None).cast("string"))


def _read_table(spark: SparkSession, uri: str):
    """A CSV file with a header row (RFC 4180: fields holding commas, quotes or line breaks
    quoted, quotes doubled; nothing else escaped) or a Parquet file or folder; the format is
    told by the name ('.csv', '.csv.gz') or else by trying Parquet. A quoted field may span
    lines (a key with a line break), so each CSV file is read by one task."""
    if uri.endswith((".csv", ".csv.gz")):
        return (spark.read.option("header", "true").option("multiLine", "true")
                .option("escape", '"').csv(uri))
    return spark.read.parquet(uri)


def _read_manifest(spark: SparkSession, uri: str, options: InputConfig) -> DataFrame:
    """A manifest: CSV with a header row, or Parquet, with a column `uri` or columns `bucket`
    and `key` (keys as they are, not URL-encoded), and optionally `size` (bytes) and
    `last_modified` (a time)."""
    _require(spark, uri, "manifest")
    table = _read_table(spark, uri)
    columns = {name.lower(): name for name in table.columns}
    if "uri" in columns:
        object_uri = canonical_uri(F.col(columns["uri"]))
    elif "bucket" in columns and "key" in columns:
        object_uri = F.concat(F.lit("s3://"), F.col(columns["bucket"]), F.lit("/"),
                              F.col(columns["key"]))
    else:
        raise JobError(f"manifest {uri}: expected a column uri, or columns bucket and key; "
                       f"found {', '.join(table.columns) or 'none'}")
    if (options.modified_after or options.modified_before) and "last_modified" not in columns:
        raise JobError(f"manifest {uri} has no last_modified column, so the modified-after/"
                       f"-before filters cannot be applied")
    return table.select(
        object_uri.alias("uri"),
        (F.col(columns["size"]).cast("long") if "size" in columns
         else F.lit(None).cast("long")).alias("size"),
        (F.col(columns["last_modified"]).cast("timestamp") if "last_modified" in columns
         else F.lit(None).cast("timestamp")).alias("modified"),
        F.lit(None).cast("string").alias("etag"))


_INVENTORY_FIELDS = {"Bucket": "bucket", "Key": "key", "Size": "size",
                     "LastModifiedDate": "last_modified_date", "IsLatest": "is_latest",
                     "IsDeleteMarker": "is_delete_marker", "ETag": "e_tag"}


def _inventory_key(encoded: Column) -> Column:
    """The key of an S3 Inventory CSV field: AWS URL-encodes keys there as HTML forms do
    (UTF-8 bytes as %XX, a space as '+', so a '+' of the key is %2B), which Spark's
    `url_decode` (Java's URLDecoder) reverses exactly. A field with a '%' that starts no %XX
    escape was not written by S3 Inventory; it is kept as it is rather than failing the run (the
    workers then dead-letter it as not found)."""
    malformed = encoded.rlike("%(?![0-9A-Fa-f]{2})")
    return F.when(malformed, encoded).otherwise(F.call_function("url_decode", encoded))


def _read_inventory(spark: SparkSession, uri: str, options: InputConfig) -> DataFrame:
    """An S3 Inventory report from its `manifest.json`: its CSV (gzip, no header, keys
    URL-encoded) or Parquet data files (field `e_tag`, CSV `ETag`); delete markers and
    non-current versions left out."""
    _require(spark, uri, "inventory manifest")
    try:
        manifest = json.loads(hadoop_fs.read_text(spark, uri))
        file_format = manifest["fileFormat"].upper()
        destination = manifest["destinationBucket"].split(":::")[-1]
        data_keys = [entry["key"] for entry in manifest["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise JobError(f"inventory manifest {uri} is not an S3 Inventory manifest.json "
                       f"({type(exc).__name__}: {exc})") from None
    scheme = scheme_of(uri)
    data_uris = [f"{scheme}://{destination}/{key}" for key in data_keys]
    log.info("inventory %s: %d %s data file(s)", uri, len(data_uris), file_format)
    if not data_uris:
        return spark.createDataFrame([], s3_listing.OBJECT_SCHEMA)
    if file_format == "CSV":
        names = [_INVENTORY_FIELDS.get(name.strip(), name.strip().lower())
                 for name in manifest.get("fileSchema", "").split(",")]
        table = spark.read.csv(data_uris).toDF(*names)
        key = _inventory_key(F.col("key"))
    elif file_format == "PARQUET":
        table = spark.read.parquet(*data_uris)
        key = F.col("key")
    else:
        raise JobError(f"inventory manifest {uri}: fileFormat {file_format} is not supported "
                       f"(CSV or Parquet)")
    missing = {"bucket", "key"} - set(table.columns)
    if missing:
        raise JobError(f"inventory {uri} lacks the fields {', '.join(sorted(missing))}")
    if (options.modified_after or options.modified_before) and \
            "last_modified_date" not in table.columns:
        raise JobError(f"inventory {uri} has no LastModifiedDate field, so the modified-after/"
                       f"-before filters cannot be applied; add that field to the inventory "
                       f"configuration, or run without the filters")
    if "is_delete_marker" in table.columns:
        table = table.where(~F.coalesce(F.col("is_delete_marker").cast("boolean"), F.lit(False)))
    if "is_latest" in table.columns:
        table = table.where(F.coalesce(F.col("is_latest").cast("boolean"), F.lit(True)))
    return table.select(
        F.concat(F.lit("s3://"), F.col("bucket"), F.lit("/"), key).alias("uri"),
        (F.col("size").cast("long") if "size" in table.columns
         else F.lit(None).cast("long")).alias("size"),
        (F.col("last_modified_date").cast("timestamp") if "last_modified_date" in table.columns
         else F.lit(None).cast("timestamp")).alias("modified"),
        (F.regexp_replace(F.col("e_tag"), '"', "") if "e_tag" in table.columns
         else F.lit(None).cast("string")).alias("etag"))
