"""Connections to the Gremlin endpoint: one remote connection with one WebSocket at a time."""
from __future__ import annotations

from contextlib import contextmanager
from urllib.parse import urlsplit

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from imagegraph.errors import JobError


def validate_endpoint(endpoint: str) -> None:
    """Raise `JobError` unless `endpoint` looks like ws[s]://host:port/gremlin."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise JobError(f"Gremlin endpoint {endpoint!r} must look like ws://HOST:PORT/gremlin "
                       "or wss://HOST:8182/gremlin")


class GremlinConnection:
    """A gremlinpython remote connection with `pool_size=1` that can be reopened after a drop.

    `g` is the traversal source bound to the current connection; `timeout_s` bounds each
    read and write on the WebSocket, in seconds.
    """

    def __init__(self, endpoint: str, timeout_s: float):
        validate_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._remote: DriverRemoteConnection | None = None
        self.g: GraphTraversalSource | None = None

    def open(self) -> "GremlinConnection":
        self._remote = DriverRemoteConnection(self.endpoint, "g", pool_size=1,
                                              read_timeout=self.timeout_s,
                                              write_timeout=self.timeout_s)
        self.g = traversal().with_remote(self._remote)
        return self

    def reopen(self) -> None:
        """Close the current connection (ignoring errors from a dead one) and open a new one."""
        self.close()
        self.open()

    def close(self) -> None:
        if self._remote is not None:
            try:
                self._remote.close()
            except Exception:  # closing a connection the server already dropped
                pass
        self._remote, self.g = None, None


@contextmanager
def gremlin_connection(endpoint: str, timeout_s: float):
    """`with gremlin_connection(url, 10) as conn: conn.g.V()...`; always closed."""
    connection = GremlinConnection(endpoint, timeout_s)
    try:
        yield connection.open()
    finally:
        connection.close()


def check_reachable(endpoint: str, timeout_s: float) -> None:
    """Raise `JobError` unless the endpoint answers a one-step traversal within `timeout_s`."""
    validate_endpoint(endpoint)
    try:
        with gremlin_connection(endpoint, timeout_s) as connection:
            connection.g.inject(1).count().next()
    except JobError:
        raise
    except Exception as exc:
        raise JobError(f"cannot reach the Gremlin endpoint {endpoint}: "
                       f"{type(exc).__name__}: {exc}") from None
