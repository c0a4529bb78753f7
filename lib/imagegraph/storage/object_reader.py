"""Object bytes by canonical URI, read in the Python workers: s3:// through boto3 (a pooled
client per worker process, standard retry mode: backoff with jitter on 500, 503 SlowDown and
throttling), file:// from local disk (local mode).

An S3 object whose ETag was listed is read with If-Match on it: when the object was overwritten
since, S3 answers 412 PreconditionFailed and the read fails (`CHANGED_SINCE_LISTED`; a later
run lists the new version) instead of returning bytes of another version than the one listed
(its size, modified time and ETag). Whether a later run tries a failed read again is the
reason's retry class (see `imagegraph.dead_letters`).

A read also returns the `VersionId` S3 answered with, as S3 gives it: none from a bucket that
was never versioned, and the literal string "null" for an object written while versioning was
off or suspended (S3's own ID of that version), kept as it is."""
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
_CHANGED_CODES = {"PreconditionFailed", "412"}
_ARCHIVED_CODES = {"InvalidObjectState"}  # a Glacier storage class or archive tier, unrestored
CHANGED_SINCE_LISTED = "object changed since listed (ETag no longer matches)"
ARCHIVED = "object archived (InvalidObjectState): restore it to read it"


def unquoted_etag(etag: str | None) -> str | None:
    """An ETag as S3 lists it (`"9b2cf535f27731c974343645a3985328"`, quoted) or as S3
    Inventory reports it (unquoted), without its quotes; None for None or ''."""
    return (etag.strip('"') or None) if etag else None


@dataclass(frozen=True)
class ObjectRead:
    """An object's bytes, the ETag S3 answered with (unquoted; None for file://) and the
    VersionId it answered with (as S3 gives it, "null" included; None when it gave none: an
    unversioned bucket, file://)."""

    data: bytes
    etag: str | None
    version_id: str | None


class ObjectUnreadable(Exception):
    """The object could not be read; `reason` says why, for dead-letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


def read_object(uri: str, size: int | None, settings: ReaderSettings,
                etag: str | None = None) -> ObjectRead:
    """The object at canonical `uri` whose listed `size` (bytes) and `etag` (quoted or not)
    are given or None; an S3 object with an `etag` is read only if it still has that ETag.

    Raises `ObjectUnreadable`; an object listed over `settings.max_bytes` is not read.
    """
    if size is not None and size > settings.max_bytes:
        raise ObjectUnreadable(oversize_reason(size, settings.max_bytes))
    scheme = scheme_of(uri)  # never URL-parsed: '?', '#' and '%' are part of keys and paths
    if scheme == "s3":
        return _read_s3(uri, settings, unquoted_etag(etag))
    if scheme == "file":
        return ObjectRead(_read_file(bucket_and_key(uri)[1]), None, None)
    raise ObjectUnreadable(f"unreadable URI scheme: {scheme or 'none'} (this job reads s3:// "
                           "and file://)")


def _read_s3(uri: str, settings: ReaderSettings, etag: str | None) -> ObjectRead:
    bucket, key = bucket_and_key(uri)
    condition = {"IfMatch": f'"{etag}"'} if etag else {}
    try:
        answer = s3_client(settings).get_object(Bucket=bucket, Key=key, **condition)
        return ObjectRead(answer["Body"].read(), unquoted_etag(answer.get("ETag")),
                          answer.get("VersionId"))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _CHANGED_CODES:
            raise ObjectUnreadable(CHANGED_SINCE_LISTED) from None
        if code in _ARCHIVED_CODES:
            raise ObjectUnreadable(ARCHIVED) from None
        if code in _MISSING_CODES:
            raise ObjectUnreadable("object not found") from None
        if code in _DENIED_CODES:
            raise ObjectUnreadable("access denied") from None
        raise ObjectUnreadable(f"read failed: {code or type(exc).__name__}") from None
    except (BotoCoreError, OSError) as exc:
        raise ObjectUnreadable(f"read failed: {type(exc).__name__}: {exc}") from None


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ObjectUnreadable("object not found") from None
    except PermissionError:
        raise ObjectUnreadable("access denied") from None
    except OSError as exc:
        raise ObjectUnreadable(f"read failed: {type(exc).__name__}: {exc}") from None
