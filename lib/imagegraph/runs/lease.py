"""One run at a time per (output, model, shard): a lease object under the output,

    <output>/_leases/<model name@version>/<shard>.json      shard: `3-of-8`, or `all`

taken before the run computes what is done -> renewed every `ttl_s / 3` by a daemon thread
while the run works (after a failed renewal, every `ttl_s / 12`) -> deleted when the run returns
or raises.

A run holds its lease only while its last successful renewal (timed by the run's own monotonic
clock from before the request was sent, so never later than the store's) is younger than
`ttl_s` less a safety margin of a third of `ttl_s` (`RunLease.held_for_s`); the job checks
before each commit. Renewals that keep failing for any reason (503s, a lost network) therefore
stop the run before the lease can expire on the store's clock and be taken over, and so does one
renewal that waits past that time (boto3 retrying 503s, a stalled connection): the stop line
names the renewal in flight and for how long, the last renewal's error, or that none was tried.

A run is refused (`JobError`, the job's one line and exit code 2) while a live lease of the same
model covers objects of its own: the same shard, a shard of another count that shares objects
with it (`shards_overlap`), or a whole run. Shards of one count are disjoint and run side by
side. A lease is live until `ttl_s` (the holder's) after its last renewal, by the store's clock
(S3's `Last-Modified` and `Date`, the file's modification time), so a run killed too hard to
delete its lease holds it for at most that long, and the next run takes it over.

Every change is conditional on the version the run last saw, so two runs never both believe
they hold one lease, and a renewal never overwrites a lease that another run took over: S3
conditional writes for s3:// and s3a:// outputs (`If-None-Match: *` to create, `If-Match:
<ETag>` to take over, renew and delete), and for file:// outputs an O_CREAT|O_EXCL create and
compare-then-replace under an exclusive `flock`. Leases of different shard files are separate
objects: two runs of overlapping shards that start at the same moment may both see the other
and both be refused, never both admitted. A run admitted beside an expired lease of an
overlapping shard deletes it (conditionally on the version it read), so that lease's holder, if
it still runs, finds its next renewal in conflict and stops as if its own shard had been taken
over. A run that no lease object names any more therefore never commits again: an inference
run removes the staging areas of such runs (`lease_holders`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Iterator
from urllib.parse import quote, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from imagegraph.config import S3Config
from imagegraph.errors import JobError
from imagegraph.logs import in_this_context
from imagegraph.storage.object_reader import ReaderSettings, s3_client
from imagegraph.storage.selection import Shard

log = logging.getLogger(__name__)

LEASES_DIR = "_leases"
_WHOLE = "all"
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"}


class LeaseConflict(Exception):
    """The lease object was not in the state a conditional change required: someone else
    created, replaced or deleted it first."""


@dataclass(frozen=True)
class StoredLease:
    """A lease object as read: its JSON `body`, the store's `version` of it (S3's ETag, a
    file's SHA-256) and `age_s`, seconds since it was last written, by the store's clock."""

    body: dict
    version: str
    age_s: float

    @property
    def live(self) -> bool:
        return self.age_s < float(self.body.get("ttl_s", 0))


def shard_name(shard: Shard | None) -> str:
    """The lease file's name (without `.json`) of `shard`: `3-of-8`, or `all` for None."""
    return f"{shard.index}-of-{shard.count}" if shard else _WHOLE


def shard_from_name(name: str) -> Shard | None:
    """The inverse of `shard_name`."""
    if name == _WHOLE:
        return None
    index, _, count = name.partition("-of-")
    return Shard(int(index), int(count))


def shards_overlap(a: Shard | None, b: Shard | None) -> bool:
    """True when some object can be in both `a` and `b` (None: every object). A URI's shard
    of N is h % N for one large hash h, so shard i/N and j/M share objects exactly when
    i = j modulo gcd(N, M)."""
    if a is None or b is None:
        return True
    common = math.gcd(a.count, b.count)
    return a.index % common == b.index % common


class _S3Store:
    """Lease objects under s3://<bucket>/<prefix>/, through boto3 conditional requests."""

    def __init__(self, bucket: str, prefix: str, s3: S3Config):
        self.bucket, self.prefix = bucket, prefix
        self.client = s3_client(ReaderSettings.from_config(s3, threads=2, max_bytes=0))

    def _call(self, operation: str, **kwargs) -> dict:
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _CONFLICT_CODES:
                raise LeaseConflict(code) from None
            raise

    def create(self, name: str, data: bytes) -> str:
        return self._call("put_object", Key=self.prefix + name, Body=data,
                          IfNoneMatch="*")["ETag"]

    def replace(self, name: str, data: bytes, version: str) -> str:
        return self._call("put_object", Key=self.prefix + name, Body=data,
                          IfMatch=version)["ETag"]

    def delete(self, name: str, version: str) -> None:
        self._call("delete_object", Key=self.prefix + name, IfMatch=version)

    def read(self, name: str) -> StoredLease | None:
        try:
            response = self._call("get_object", Key=self.prefix + name)
        except LeaseConflict:  # NoSuchKey: not there (any more)
            return None
        data = response["Body"].read()
        date = response["ResponseMetadata"]["HTTPHeaders"].get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
        return StoredLease(_parse(data), response["ETag"],
                           (now - response["LastModified"]).total_seconds())

    def names(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        return [item["Key"][len(self.prefix):] for page in pages
                for item in page.get("Contents", [])]


class _FileStore:
    """Lease files in a local directory; every change under an exclusive `flock` of its
    `.lock` file, so that compare-then-replace is atomic among processes of this host."""

    def __init__(self, directory: str):
        self.directory = directory

    @contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _current(self, name: str) -> tuple[bytes, float] | None:
        try:
            with open(self._path(name), "rb") as handle:
                return handle.read(), os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return None

    def create(self, name: str, data: bytes) -> str:
        with self._locked():
            try:
                descriptor = os.open(self._path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                     0o644)
            except FileExistsError:
                raise LeaseConflict("exists") from None
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        return hashlib.sha256(data).hexdigest()

    def replace(self, name: str, data: bytes, version: str) -> str:
        with self._locked():
            self._require(name, version)
            temporary = self._path(f".{name}.{os.getpid()}")
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self._path(name))
        return hashlib.sha256(data).hexdigest()

    def delete(self, name: str, version: str) -> None:
        with self._locked():
            self._require(name, version)
            os.remove(self._path(name))

    def _require(self, name: str, version: str) -> None:
        current = self._current(name)
        if current is None or hashlib.sha256(current[0]).hexdigest() != version:
            raise LeaseConflict("changed")

    def read(self, name: str) -> StoredLease | None:
        with self._locked():
            current = self._current(name)
            now = datetime.now(timezone.utc).timestamp()
        if current is None:
            return None
        data, modified = current
        return StoredLease(_parse(data), hashlib.sha256(data).hexdigest(), now - modified)

    def names(self) -> list[str]:
        try:
            return [name for name in os.listdir(self.directory) if not name.startswith(".")]
        except FileNotFoundError:
            return []


def _parse(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"run_id": "unknown (unreadable lease)"}


def lease_store(leases_uri: str, s3: S3Config) -> _S3Store | _FileStore:
    """The JSON objects directly under `leases_uri` (s3://, s3a:// or file://): leases, or the
    run reports that `runs.status` reads the same way."""
    parts = urlsplit(leases_uri)
    if parts.scheme in ("s3", "s3a"):
        return _S3Store(parts.netloc, parts.path.lstrip("/") + "/", s3)
    if parts.scheme in ("file", ""):
        return _FileStore(parts.path)
    raise JobError(f"{leases_uri}: a run's lease needs an s3://, s3a:// or file:// --output")


class RunLease:
    """The lease a run holds (see the module docstring); `take_lease` returns it taken and
    being renewed. Use it as a context manager, or call `release` when the run ends.
    `renewed_at` is when the request that took the lease was sent, in seconds of `clock`
    (monotonic)."""

    def __init__(self, uri: str, store, name: str, body: dict, version: str,
                 renewed_at: float, clock: Callable[[], float] = time.monotonic):
        self.uri = uri
        self._store, self._name, self._body, self._version = store, name, body, version
        self._clock, self._renewed_at = clock, renewed_at
        self._renew_error = ""
        self._renew_sent_at: float | None = None  # when the renewal in flight was sent
        self._lost: str | None = None  # why the lease is not held, once it is not
        self._taken_over = False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=in_this_context(self._renew_until_stopped),
                                         daemon=True, name=f"lease {name}")
        self._renewer.start()

    def __enter__(self) -> "RunLease":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    @property
    def held_for_s(self) -> float:
        """Seconds after a successful renewal that the run still holds the lease: `ttl_s`
        less a third of it, the margin for the clocks of run and store, and for a commit
        started just before the end."""
        return float(self._body["ttl_s"]) * 2 / 3

    def ensure_held(self) -> None:
        """Raise `JobError` when the lease is not held: taken over by another run, or not
        renewed for `held_for_s`; the run must not commit anything more."""
        if not self._lost:
            age = self._clock() - self._renewed_at
            if age < self.held_for_s:
                return
            self._lost = (f"not renewed for {age:.0f} s, over the {self.held_for_s:.0f} s it "
                          f"is held after a renewal (TTL {float(self._body['ttl_s']):.0f} s); "
                          f"{self._why_not_renewed()}")
        raise JobError(f"run {self._body['run_id']} lost its lease {self.uri}: {self._lost}")

    def _why_not_renewed(self) -> str:
        """Why no renewal succeeded lately: the renewal in flight and for how long (S3's
        retries of 503s, a stalled connection or a held lock can keep one waiting past the
        TTL), the last renewal's error, or that none was tried."""
        sent_at = self._renew_sent_at
        causes = [] if sent_at is None else [
            f"a renewal in flight for {self._clock() - sent_at:.0f} s"]
        if self._renew_error:
            causes.append(f"last renewal error: {self._renew_error}")
        return "; ".join(causes) or "no renewal tried since the last one succeeded"

    def renew(self) -> bool:
        """Renew now, only if the lease is still this run's version; False once taken over,
        or when this renewal failed."""
        if self._lost:
            return False
        sent_at = self._renew_sent_at = self._clock()
        body = {**self._body, "renewed_at": _now()}
        try:
            self._version = self._store.replace(self._name, _encode(body), self._version)
        except LeaseConflict:
            self._lost, self._taken_over = "another run took it over after it expired", True
            log.error("run %s: lease %s lost: %s; the run stops before its next commit",
                      self._body["run_id"], self.uri, self._lost)
            return False
        except (BotoCoreError, ClientError, OSError) as exc:
            self._renew_error = f"{type(exc).__name__}: {exc}"
            log.warning("run %s: could not renew lease %s (will try again): %s",
                        self._body["run_id"], self.uri, self._renew_error)
            return False
        else:
            self._body, self._renewed_at, self._renew_error = body, sent_at, ""
            return True
        finally:
            self._renew_sent_at = None

    def _renew_until_stopped(self) -> None:
        interval = float(self._body["ttl_s"]) / 3
        while not self._stop.wait(interval):
            interval = float(self._body["ttl_s"]) / (3 if self.renew() else 12)
            if self._lost:
                return

    def release(self) -> None:
        """Stop renewing and delete the lease, unless another run took it over."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._renewer.join()
        if self._taken_over:
            return
        try:
            self._store.delete(self._name, self._version)
        except LeaseConflict:
            log.warning("run %s: lease %s was taken over by another run; left to it",
                        self._body["run_id"], self.uri)
        except (BotoCoreError, ClientError, OSError) as exc:
            log.warning("run %s: could not delete lease %s; it expires %.0f s after its last "
                        "renewal: %s", self._body["run_id"], self.uri,
                        float(self._body["ttl_s"]), exc)


def lease_directory(output_uri: str, model_tag: str) -> str:
    """Where the leases of `model_tag`'s shards under `output_uri` are:
    `<output>/_leases/<model name@version>` (the tag percent-quoted but its `@`)."""
    return f"{output_uri.rstrip('/')}/{LEASES_DIR}/{quote(model_tag, safe='@')}"


def lease_models(output_uri: str, s3: S3Config) -> list[str]:
    """The model tags with a lease directory under `output_uri`, sorted."""
    names = lease_store(f"{output_uri.rstrip('/')}/{LEASES_DIR}", s3).names()
    return sorted({unquote(name.split("/", 1)[0]) for name in names})


def lease_holders(output_uri: str, s3: S3Config) -> set[str]:
    """The run ids that the lease objects under `output_uri` name, of every model and shard,
    live or expired: every run that may still be working there. A run whose lease no object
    names (deleted when it ended, or taken over or ended by another run once expired) never
    commits again: its next renewal is in conflict, and it holds the lease for a third of the
    TTL less than the lease lives."""
    holders = set()
    for model in lease_models(output_uri, s3):
        store = lease_store(lease_directory(output_uri, model), s3)
        for name in store.names():
            if name.endswith(".json"):
                lease = store.read(name)
                if lease is not None:
                    holders.add(str(lease.body.get("run_id")))
    return holders


def take_lease(output_uri: str, model_tag: str, shard: Shard | None, run_id: str,
               ttl_s: float, s3: S3Config,
               clock: Callable[[], float] = time.monotonic) -> RunLease:
    """Take run `run_id`'s lease on (`output_uri`, `model_tag`, `shard`) for `ttl_s` seconds
    at a time, held as timed by `clock` (monotonic seconds); `JobError` naming the holder when
    a live lease of another run covers any of its objects, or when the store cannot be
    reached."""
    directory = lease_directory(output_uri, model_tag)
    store, name = lease_store(directory, s3), shard_name(shard) + ".json"
    body = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "output": output_uri, "model": model_tag, "shard": str(shard) if shard else "",
            "ttl_s": ttl_s, "started_at": _now(), "renewed_at": _now()}
    sent_at = clock()
    try:
        lease = RunLease(f"{directory}/{name}", store, name, body,
                         _take(store, name, body, directory), sent_at, clock)
    except (BotoCoreError, ClientError, OSError) as exc:
        raise _unreachable(directory, exc) from None
    try:
        _refuse_overlapping(store, name, shard, directory)
    except BaseException as exc:
        lease.release()
        if isinstance(exc, (BotoCoreError, ClientError, OSError)):
            raise _unreachable(directory, exc) from None
        raise
    log.debug("run %s: holds lease %s (%.0f s, renewed every %.0f s)", run_id, lease.uri,
              ttl_s, ttl_s / 3)
    return lease


def _unreachable(directory: str, exc: Exception) -> JobError:
    return JobError(f"cannot take the run's lease under {directory}: "
                    f"{type(exc).__name__}: {exc}")


def _take(store, name: str, body: dict, directory: str) -> str:
    """Create the lease `name`, or take it over once expired; its version."""
    data = _encode(body)
    for _ in range(5):  # each pass loses only to a run that changed the lease meanwhile
        try:
            return store.create(name, data)
        except LeaseConflict:
            pass
        current = store.read(name)
        if current is None:
            continue  # released meanwhile
        if current.live:
            raise JobError(_refusal(f"{directory}/{name}", current))
        try:
            version = store.replace(name, data, current.version)
        except LeaseConflict:
            continue
        log.warning("run %s: took over the expired lease %s/%s of run %s (last renewed "
                    "%.0f s ago)", body["run_id"], directory, name,
                    current.body.get("run_id"), current.age_s)
        return version
    raise JobError(f"{directory}/{name}: the lease kept changing while this run tried to take "
                   f"it; another run is starting on the same shard")


def _refuse_overlapping(store, own: str, shard: Shard | None, directory: str) -> None:
    for name in store.names():
        if name == own or not name.endswith(".json"):
            continue
        try:
            other = shard_from_name(name[:-len(".json")])
        except ValueError:
            continue
        if shards_overlap(shard, other):
            _end_overlapping(store, name, f"{directory}/{name}")


def _end_overlapping(store, name: str, uri: str) -> None:
    """Refuse the run while the lease `name` of an overlapping shard is live; delete it once
    expired, so that its holder's next renewal is in conflict."""
    for _ in range(5):  # each pass loses only to a holder that renewed meanwhile
        current = store.read(name)
        if current is None:
            return
        if current.live:
            raise JobError(_refusal(uri, current))
        try:
            store.delete(name, current.version)
        except LeaseConflict:
            continue
        log.warning("ended the expired lease %s of run %s (last renewed %.0f s ago), whose "
                    "shard overlaps this run's", uri, current.body.get("run_id"),
                    current.age_s)
        return
    raise JobError(f"{uri}: the lease kept changing while this run tried to end it; another "
                   f"run is working on an overlapping shard")


def _refusal(uri: str, lease: StoredLease) -> str:
    body = lease.body
    shard = f"shard {body['shard']}" if body.get("shard") else "every shard"
    return (f"run {body.get('run_id')} on {body.get('host')} (pid {body.get('pid')}) is "
            f"processing {shard} of {body.get('output')} with {body.get('model')}: its lease "
            f"{uri} was renewed {lease.age_s:.0f} s ago and lives {body.get('ttl_s')} s "
            f"past each renewal; let that run finish, or stop it (a cancelled EMR step's YARN "
            f"application may still run: yarn application -kill) and run again once the "
            f"lease has expired")


def _encode(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True).encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
