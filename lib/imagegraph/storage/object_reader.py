"""Object bytes by canonical URI, read in the Python workers: s3:// through boto3 (a pooled
client per worker process, standard retry mode: backoff with jitter on 500, 503 SlowDown and
throttling), file:// from local disk (local mode)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imagegraph.config import S3Config
from imagegraph.imaging.decode import oversize_reason
from imagegraph.storage.sources import bucket_and_key, scheme_of

_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden"}


class ObjectUnreadable(Exception):
    """The object could not be read. `retryable`: a later run may succeed (a server error that
    outlasted the retries) rather than never (missing, access denied, over the size limit)."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class ReaderSettings:
    """What a worker needs to reach S3: the endpoint (empty: AWS), static keys (empty: boto3's
    default credential chain, e.g. the EMR instance profile), tries per read, connections per
    worker (`threads`), and the byte limit above which an object is not read."""

    endpoint: str
    region: str
    path_style_access: bool
    max_attempts: int
    threads: int
    max_bytes: int
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    @classmethod
    def from_config(cls, s3: S3Config, threads: int, max_bytes: int) -> "ReaderSettings":
        return cls(endpoint=s3.endpoint, region=s3.region,
                   path_style_access=s3.path_style_access, max_attempts=s3.max_attempts,
                   threads=threads, max_bytes=max_bytes, access_key=s3.access_key,
                   secret_key=s3.secret_key)


_clients: dict[ReaderSettings, object] = {}
_clients_lock = threading.Lock()


def s3_client(settings: ReaderSettings):
    """This process's boto3 S3 client for `settings` (boto3 clients are thread-safe)."""
    with _clients_lock:
        if settings not in _clients:
            _clients[settings] = boto3.session.Session().client(
                "s3", endpoint_url=settings.endpoint or None, region_name=settings.region,
                aws_access_key_id=settings.access_key or None,
                aws_secret_access_key=settings.secret_key or None,
                config=BotoConfig(
                    retries={"mode": "standard",
                             "total_max_attempts": settings.max_attempts},
                    max_pool_connections=settings.threads,
                    s3={"addressing_style": "path" if settings.path_style_access else "auto"}))
        return _clients[settings]


def read_object(uri: str, size: int | None, settings: ReaderSettings) -> bytes:
    """The bytes of the object at canonical `uri` whose listed `size` (bytes) is given or None.

    Raises `ObjectUnreadable`; an object listed over `settings.max_bytes` is not read.
    """
    if size is not None and size > settings.max_bytes:
        raise ObjectUnreadable(oversize_reason(size, settings.max_bytes), retryable=False)
    scheme = scheme_of(uri)  # never URL-parsed: '?', '#' and '%' are part of keys and paths
    if scheme == "s3":
        return _read_s3(uri, settings)
    if scheme == "file":
        return _read_file(bucket_and_key(uri)[1])
    raise ObjectUnreadable(f"cannot read {scheme or 'scheme-less'} URIs (s3:// or file://)",
                           retryable=False)


def _read_s3(uri: str, settings: ReaderSettings) -> bytes:
    bucket, key = bucket_and_key(uri)
    try:
        return s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            raise ObjectUnreadable("object not found", retryable=False) from None
        if code in _DENIED_CODES:
            raise ObjectUnreadable("access denied", retryable=False) from None
        raise ObjectUnreadable(f"read failed: {code or type(exc).__name__}",
                               retryable=True) from None
    except (BotoCoreError, OSError) as exc:
        raise ObjectUnreadable(f"read failed: {type(exc).__name__}: {exc}",
                               retryable=True) from None


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ObjectUnreadable("object not found", retryable=False) from None
    except PermissionError:
        raise ObjectUnreadable("access denied", retryable=False) from None
    except OSError as exc:
        raise ObjectUnreadable(f"read failed: {type(exc).__name__}: {exc}",
                               retryable=True) from None
