"""Listing the objects under an S3 prefix with boto3, every key exactly as S3 returns it (no
Hadoop `Path`, no URL parsing), each with its size, last-modified time and ETag (the version
listed, which the workers then read with If-Match), zero-byte objects included.

Flow: the driver lists one level below the prefix (ListObjectsV2 with Delimiter '/'): the objects
directly under it, and its common prefixes ("sub-folders"); when the listing is recursive, a
Spark job lists each common prefix in full in the executors, paginated, through the same boto3
client settings the workers read objects with. botocore asks S3 for URL-encoded keys and decodes
them, so keys that XML 1.0 cannot carry (ASCII control characters) arrive intact too: every key
S3 holds is listed as the string it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, Iterator

from botocore.exceptions import BotoCoreError, ClientError
from pyspark.sql import DataFrame, SparkSession

from imagegraph.errors import JobError
from imagegraph.storage.object_reader import ReaderSettings, s3_client, unquoted_etag
from imagegraph.storage.sources import bucket_and_key

OBJECT_SCHEMA = "uri string, size long, modified timestamp, etag string"
DELIMITER = "/"


@dataclass(frozen=True)
class PrefixListing:
    """What to list: the objects of `bucket` whose keys start with `prefix`, at any depth when
    `recursive` (else only those with no '/' after the prefix), whose file name (the key after
    its last '/') matches the fnmatch pattern `glob` (case-sensitive: `*`, `?`, `[seq]`,
    `[!seq]`). Objects directly under the prefix (its common prefixes aside) are listed
    on the driver, the rest per common prefix in the executors."""

    bucket: str
    prefix: str
    glob: str
    recursive: bool

    def keeps(self, key: str, size: int) -> bool:
        """Whether the object `key` of `size` bytes is listed. A zero-byte key ending in '/' is
        a folder marker (what the S3 console's "Create folder" writes), not an object to
        classify; a key ending in '/' that has bytes is listed like any other."""
        if key.endswith(DELIMITER) and size == 0:
            return False
        return fnmatchcase(key.rsplit(DELIMITER, 1)[-1], self.glob)

    def uri(self, key: str) -> str:
        """The canonical URI of `key` in this bucket."""
        return f"s3://{self.bucket}/{key}"


def prefix_listing(uri: str, glob: str, recursive: bool) -> PrefixListing:
    """The listing an input URI names: `s3a://bucket/photos/` lists the keys starting with
    `photos/`, `s3a://bucket` or `s3a://bucket/` the whole bucket. A URI that does not end in
    '/' names a folder, as in Hadoop (`s3a://bucket/photos` lists `photos/...`); see
    `list_prefix` for a single object."""
    bucket, key = bucket_and_key(uri)
    if key and not key.endswith(DELIMITER):
        key += DELIMITER
    return PrefixListing(bucket, key, glob, recursive)


def list_prefix(spark: SparkSession, uri: str, glob: str, recursive: bool,
                reader: ReaderSettings) -> DataFrame:
    """The objects under the S3 prefix `uri` (s3://, s3a:// or s3n://) as a DataFrame of
    (uri: canonical `s3://bucket/key`, size: long bytes, modified: timestamp, etag: the
    listed ETag without its quotes, see `object_reader.unquoted_etag`), listed with
    the S3 client of `reader`. A `uri` not ending in '/' that is itself an object lists that
    object alone.

    Raises `JobError`, before any Spark job, when the bucket does not exist, S3 cannot be
    reached or nothing exists at `uri`.
    """
    listing = prefix_listing(uri, glob, recursive)
    client = s3_client(reader)
    try:
        top = list(_pages(client, listing.bucket, listing.prefix, DELIMITER))
        if not any(page.get("Contents") or page.get("CommonPrefixes") for page in top):
            top = _single_object(client, *bucket_and_key(uri))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            raise JobError(f"{uri}: the bucket {listing.bucket} does not exist") from None
        raise JobError(f"cannot list {uri}: {code or exc}") from None
    except BotoCoreError as exc:
        raise JobError(f"cannot reach {uri}: {exc}") from None
    if not top:
        raise JobError(f"input {uri} does not exist (no object or prefix at that URI)")
    objects = spark.createDataFrame(list(_objects(listing, top)), OBJECT_SCHEMA)
    folders = [entry["Prefix"] for page in top for entry in page.get("CommonPrefixes", [])]
    if not (listing.recursive and folders):
        return objects
    slices = min(len(folders), 4 * spark.sparkContext.defaultParallelism)
    nested = (spark.sparkContext.parallelize(folders, slices)
              .mapPartitions(lambda prefixes: _list_folders(prefixes, listing, reader)))
    return objects.unionByName(spark.createDataFrame(nested, OBJECT_SCHEMA))


def _pages(client, bucket: str, prefix: str, delimiter: str = "") -> Iterator[dict]:
    """ListObjectsV2 response pages (1000 keys each at most), following continuation
    tokens; with `delimiter`, keys past it are rolled up into the pages' CommonPrefixes."""
    arguments = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        arguments["Delimiter"] = delimiter
    return iter(client.get_paginator("list_objects_v2").paginate(**arguments))


def _single_object(client, bucket: str, key: str) -> list[dict]:
    """A page listing the object `key` alone (an input URI without a trailing '/' that names
    an object, not a folder); no page when there is no such object."""
    if not key or key.endswith(DELIMITER):
        return []
    page = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    found = [entry for entry in page.get("Contents", []) if entry["Key"] == key]
    return [{"Contents": found}] if found else []


def _objects(listing: PrefixListing, pages: Iterable[dict]) -> Iterator[tuple]:
    """(uri, size, modified, etag) of the kept objects of ListObjectsV2 `pages`."""
    for page in pages:
        for entry in page.get("Contents", []):
            if listing.keeps(entry["Key"], entry["Size"]):
                yield (listing.uri(entry["Key"]), entry["Size"], entry["LastModified"],
                       unquoted_etag(entry.get("ETag")))


def _list_folders(prefixes: Iterable[str], listing: PrefixListing,
                  reader: ReaderSettings) -> Iterator[tuple]:
    """In an executor: every kept object under each of `prefixes`, at any depth."""
    client = s3_client(reader)
    for prefix in prefixes:
        yield from _objects(listing, _pages(client, listing.bucket, prefix))
