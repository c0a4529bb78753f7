"""An HTTP proxy in front of an S3 server that misbehaves on object reads the way S3 can, since
moto's server cannot:

- with `fail_every=k`, every k-th GET of an object is answered with 500 InternalError or 503
  SlowDown (alternately, starting with 500), with S3's XML error body, and never reaches the
  server;
- with `key_statuses` ({'/bucket/key': fault}), every GET of a chosen object is answered with
  its fault, a status (403 AccessDenied, 404 NoSuchKey, 500 InternalError, 503 SlowDown) or
  'InvalidObjectState' (403, as S3 answers a GET of an object archived in a Glacier storage
  class), and S3's XML error body, and never reaches the server; the mapping may be replaced
  while the proxy runs;
- once `put_statuses` ({'/bucket/key': fault}, empty at first) is set, every PUT of a chosen
  object (a write, such as a run's lease renewal) is answered with its fault the same way;
- while `hold()` is in effect, GETs of objects (or of the chosen ones) wait (a stalled read)
  until `release()`.

Every other request is passed through unchanged.

    with S3FaultProxy("http://127.0.0.1:9090", fail_every=4) as proxy:
        ...  # point the s3a endpoint at proxy.endpoint
    proxy.injected   # {500: n, 503: m}: by fault
    proxy.gets       # {'/bucket/key': GETs seen}

Deterministic (a counter, not a random draw), threaded, standard library only. Path-style
requests only (`/bucket/key`), as the local configuration uses.
"""
from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "expect"}
_ERRORS: dict[int | str, tuple[int, str, str]] = {  # fault -> status, S3 code, message
    403: (403, "AccessDenied", "Access Denied"),
    404: (404, "NoSuchKey", "The specified key does not exist."),
    500: (500, "InternalError", "We encountered an internal error. Please try again."),
    503: (503, "SlowDown", "Please reduce your request rate."),
    "InvalidObjectState": (403, "InvalidObjectState",
                           "The operation is not valid for the object's storage class"),
}


def s3_error_body(fault: int | str, resource: str, request_id: str) -> bytes:
    _, code, message = _ERRORS[fault]
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Resource>{resource}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()


def is_object_get(method: str, target: str) -> bool:
    """A GET of `/bucket/key` (not a listing of `/bucket/?...`, not a HEAD)."""
    bucket, _, key = urlsplit(target).path.lstrip("/").partition("/")
    return method == "GET" and bool(bucket) and bool(key)


class S3FaultProxy:
    """Listens on a free port of HOST; `endpoint` is its URL; `injected` counts the faults
    by fault, `object_gets` every object GET it saw (failed or passed), `gets` them by object
    path (unquoted), and `held` the GETs waiting for `release()` right now."""

    def __init__(self, upstream: str, fail_every: int | None = None,
                 key_statuses: Mapping[str, int | str] | None = None):
        if fail_every is not None and fail_every < 2:
            raise ValueError("fail_every must be 2 or more, or no read would ever succeed")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.fail_every = fail_every
        self.key_statuses = dict(key_statuses or {})
        if set(self.key_statuses.values()) - set(_ERRORS):
            raise ValueError(f"faults must be among {sorted(map(str, _ERRORS))}")
        self.put_statuses: dict[str, int | str] = {}
        self.injected: Counter = Counter()
        self.gets: Counter = Counter()
        self.object_gets = 0
        self.held = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self._held_paths: frozenset[str] | None = None
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="s3-fault-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def hold(self, paths: frozenset[str] | None = None) -> None:
        """Make GETs of objects wait from now on: those of `paths` ('/bucket/key', unquoted),
        or of every object when None."""
        self._held_paths = paths
        self._released.clear()

    def release(self) -> None:
        """Let held and later GETs of objects through."""
        self._released.set()

    def fault_for(self, method: str, target: str) -> int | str | None:
        """Wait while held; then the fault to fail this request with, or None to pass it."""
        path = unquote(urlsplit(target).path)
        if method == "PUT" and path in self.put_statuses:
            with self._lock:
                self.injected[self.put_statuses[path]] += 1
            return self.put_statuses[path]
        if not is_object_get(method, target):
            return None
        if self._held_paths is None or path in self._held_paths:
            with self._lock:
                self.held += 1
            self._released.wait()
            with self._lock:
                self.held -= 1
        with self._lock:
            self.object_gets += 1
            self.gets[path] += 1
            if path in self.key_statuses:
                self.injected[self.key_statuses[path]] += 1
                return self.key_statuses[path]
            if self.fail_every is None or self.object_gets % self.fail_every:
                return None
            status = 500 if sum(self.injected.values()) % 2 == 0 else 503
            self.injected[status] += 1
            return status

    def __enter__(self) -> "S3FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` for PUTs

        def _relay(self) -> None:
            body = self._request_body()
            fault = proxy.fault_for(self.command, self.path)
            if fault is not None:
                self._fail(fault)
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() in _HOP_BY_HOP or (key.lower() == "content-length"
                                                      and self.command != "HEAD"):
                        continue
                    self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            finally:
                upstream.close()

        def _request_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if not size:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after the chunk
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _fail(self, fault: int | str) -> None:
            request_id = f"FAULT{sum(proxy.injected.values()):08d}"
            body = s3_error_body(fault, urlsplit(self.path).path, request_id)
            self.send_response(_ERRORS[fault][0])
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amz-request-id", request_id)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

        def log_message(self, format, *args) -> None:  # quiet
            pass

    return Handler
