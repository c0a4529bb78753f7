"""Connections to the Gremlin endpoint: one remote connection with one WebSocket at a time,
signed for IAM when the configuration asks for it."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import urlsplit

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversalSource

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.auth import (default_chain_credentials, resolve_region,
                                   signed_handshake_headers, uses_iam)


def validate_endpoint(endpoint: str) -> None:
    """Raise `JobError` unless `endpoint` looks like ws[s]://host:port/gremlin."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise JobError(f"Gremlin endpoint {endpoint!r} must look like ws://HOST:PORT/gremlin "
                       "or wss://HOST:8182/gremlin")


def with_resolved_region(graph: GraphConfig) -> GraphConfig:
    """`graph` with its region filled in (on the driver) when requests are to be signed, so
    executors, which may not know their region, sign for the same one."""
    if uses_iam(graph.endpoint, graph.iam_auth):
        return replace(graph, region=resolve_region(graph.region))
    return graph


class GremlinConnection:
    """A gremlinpython remote connection with `pool_size=1` that can be reopened after a drop.

    `g` is the traversal source bound to the current connection (None while closed). Each
    `open` signs the handshake anew when IAM authentication is on.
    """

    def __init__(self, graph: GraphConfig):
        validate_endpoint(graph.endpoint)
        self.graph = graph
        self._remote: DriverRemoteConnection | None = None
        self.g: GraphTraversalSource | None = None

    def _headers(self) -> dict[str, str] | None:
        if not uses_iam(self.graph.endpoint, self.graph.iam_auth):
            return None
        return signed_handshake_headers(self.graph.endpoint, resolve_region(self.graph.region),
                                        default_chain_credentials())

    def open(self) -> "GremlinConnection":
        self._remote = DriverRemoteConnection(self.graph.endpoint, "g", pool_size=1,
                                              headers=self._headers(),
                                              read_timeout=self.graph.request_timeout_s,
                                              write_timeout=self.graph.request_timeout_s)
        self.g = traversal().with_remote(self._remote)
        return self

    def close(self) -> None:
        """Close the connection, ignoring errors from one the server already dropped."""
        if self._remote is not None:
            try:
                self._remote.close()
            except Exception:  # closing a dead connection
                pass
        self._remote, self.g = None, None


@contextmanager
def gremlin_connection(graph: GraphConfig):
    """`with gremlin_connection(config.graph) as conn: conn.g.V()...`; always closed."""
    connection = GremlinConnection(graph)
    try:
        yield connection.open()
    finally:
        connection.close()


def check_reachable(graph: GraphConfig) -> None:
    """Raise `JobError` unless the endpoint answers a one-step traversal."""
    validate_endpoint(graph.endpoint)
    try:
        with gremlin_connection(graph) as connection:
            connection.g.inject(1).count().next()
    except JobError:
        raise
    except Exception as exc:
        raise JobError(f"cannot reach the Gremlin endpoint {graph.endpoint}: "
                       f"{type(exc).__name__}: {exc}") from None
