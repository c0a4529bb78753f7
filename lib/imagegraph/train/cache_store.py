"""Where petastorm's Parquet cache of the training data lives, and how petastorm opens it.

petastorm 0.13.1 opens `file://` itself, `hdfs://` through libhdfs3 or libhdfs (no Python on
EMR has either binding), and every other scheme through the fsspec filesystem registered for it,
which it hands to pyarrow's legacy `ParquetDataset`. pyarrow 14 takes the legacy path only for a
legacy `pyarrow.filesystem.FileSystem`; given any fsspec filesystem (s3fs included) it fails
with "Keyword 'validate_schema' is not yet supported". So a cache is reachable as:

    file://...            petastorm's own local filesystem (local mode only)
    s3://..., s3a://...   pyarrow's own S3 client (the AWS SDK's credential chain: environment,
                          then the instance profile on EMR) at the job's S3 endpoint and region
    hdfs://...            Spark writes it as `webhdfs://` at the NameNode's HTTP address
                          (`dfs.namenode.http-address`, port 9870 on EMR) and petastorm reads it
                          through fsspec's WebHDFS client

`register(s3)` registers the S3 and WebHDFS filesystems in this process (the driver, and each
training worker's process before it opens a reader); `petastorm_url` maps an `hdfs://` cache.
"""
from __future__ import annotations

import getpass
import os
import warnings
from typing import Any
from urllib.parse import urlparse

import fsspec
from pyarrow.filesystem import DaskFileSystem

from imagegraph.config import S3Config

DEFAULT_NAMENODE_HTTP_PORT = 9870


def petastorm_url(cache_url: str, namenode_http_address: str) -> str:
    """The URI Spark writes and petastorm reads for `cache_url`: an `hdfs://[host[:port]]/path`
    becomes `webhdfs://HOST:PORT/path` at `namenode_http_address` (`dfs.namenode.http-address`,
    `host:port`; a wildcard host 0.0.0.0 is replaced by `cache_url`'s host); any other URI is
    unchanged."""
    parsed = urlparse(cache_url)
    if parsed.scheme != "hdfs":
        return cache_url
    host, _, port = namenode_http_address.rpartition(":")
    if host in ("", "0.0.0.0"):
        if not parsed.hostname:
            raise ValueError(f"training.cache_url {cache_url}: the NameNode's HTTP address is "
                             f"{namenode_http_address!r} (dfs.namenode.http-address) and the "
                             "URI names no host; name one: hdfs://NAMENODE/path")
        host = parsed.hostname
    return f"webhdfs://{host}:{port or DEFAULT_NAMENODE_HTTP_PORT}{parsed.path}"


def register(s3: S3Config) -> None:
    """Register, in this process, the filesystems petastorm opens `s3://`, `s3a://` and
    `webhdfs://` caches with (S3 through `s3`'s endpoint, region and keys; empty keys: the AWS
    SDK's credential chain)."""
    store = type("JobS3Store", (_S3Store,), {"settings": s3})
    for scheme in ("s3", "s3a"):
        fsspec.register_implementation(scheme, store, clobber=True)
    fsspec.register_implementation("webhdfs", _WebHdfsStore, clobber=True)


class _LegacyStore(DaskFileSystem):  # type: ignore[misc]
    """An fsspec filesystem behind pyarrow's legacy filesystem API, as petastorm's reader needs
    it. Subclasses make the fsspec filesystem and say how a URI becomes a path."""

    def __init__(self, **url_options: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the legacy API's deprecation notice
            super().__init__(self.fsspec_filesystem(**url_options))

    def fsspec_filesystem(self, **url_options: Any) -> Any:
        raise NotImplementedError

    def isfile(self, path: str) -> bool:
        return bool(self.fs.isfile(path))

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(path))

    @staticmethod
    def _get_kwargs_from_urls(url: str) -> dict[str, Any]:
        return {}


class _S3Store(_LegacyStore):
    """S3 through pyarrow's `S3FileSystem`; paths are `bucket/key`."""

    settings: S3Config = S3Config()

    def fsspec_filesystem(self, **url_options: Any) -> Any:
        import pyarrow.fs
        from fsspec.implementations.arrow import ArrowFSWrapper

        s3 = self.settings
        options: dict[str, Any] = {"region": s3.region}
        if s3.endpoint:
            endpoint = urlparse(s3.endpoint)
            options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
        if s3.access_key:
            options.update(access_key=s3.access_key, secret_key=s3.secret_key)
        return ArrowFSWrapper(pyarrow.fs.S3FileSystem(**options))

    @staticmethod
    def _strip_protocol(url: str) -> str:
        return url.split("://", 1)[-1].rstrip("/")


class _WebHdfsStore(_LegacyStore):
    """HDFS through fsspec's WebHDFS client, as the Hadoop user the job runs as
    (HADOOP_USER_NAME, else SPARK_USER, else the login name); paths are absolute."""

    def fsspec_filesystem(self, **url_options: Any) -> Any:
        from fsspec.implementations.webhdfs import WebHDFS

        user = (os.environ.get("HADOOP_USER_NAME") or os.environ.get("SPARK_USER")
                or getpass.getuser())
        return WebHDFS(user=user, **url_options)

    @staticmethod
    def _get_kwargs_from_urls(url: str) -> dict[str, Any]:
        from fsspec.implementations.webhdfs import WebHDFS

        return dict(WebHDFS._get_kwargs_from_urls(url))

    @staticmethod
    def _strip_protocol(url: str) -> str:
        return urlparse(url).path.rstrip("/") if "://" in url else url.rstrip("/")
