"""Connections to the Gremlin endpoint: one remote connection with one WebSocket at a time,
signed for IAM when the configuration asks for it, every wait bounded.

open: TCP, TLS and the WebSocket handshake within `graph.connect_timeout_s` (an HTTP error
answered to the handshake is raised as `HandshakeRejected`) -> submit: each write and each read
of a request within `graph.request_timeout_s` -> any exception closes the connection, so a
failed connection never holds the one-connection pool (the next submit opens a new one).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator
from urllib.parse import urlsplit

import aiohttp
import async_timeout
from gremlin_python.driver.aiohttp.transport import AiohttpTransport
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource
from gremlin_python.process.traversal import Traverser

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.auth import (
    default_chain_credentials,
    resolve_region,
    signed_handshake_headers,
    uses_iam,
)

# gremlinpython logs every error response, stack trace included, at ERROR, in the driver and in
# every executor's Python worker; the graph writer classifies and reports each failure itself.
logging.getLogger("gremlinpython").setLevel(logging.CRITICAL)


class HandshakeRejected(Exception):
    """The endpoint answered the WebSocket handshake with HTTP `status` (an int) instead of
    upgrading; the message carries no request header, so no signature or token."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"HTTP {status} {reason} at the WebSocket handshake")
        self.status = status


class BoundedTransport(AiohttpTransport):
    """gremlinpython's aiohttp transport with the handshake bounded by `connect_timeout_s`
    seconds, handshake errors raised as `HandshakeRejected`, and itself closed when the
    handshake fails (reads and writes keep gremlinpython's `read_timeout`/`write_timeout`)."""

    def __init__(self, connect_timeout_s: float, **kwargs):
        super().__init__(**kwargs)
        self._connect_timeout_s = connect_timeout_s

    def connect(self, url, headers=None):
        async def handshake():
            self._client_session = aiohttp.ClientSession()
            async with async_timeout.timeout(self._connect_timeout_s):
                self._websocket = await self._client_session.ws_connect(
                    url, headers=headers, **self._aiohttp_kwargs)

        try:
            self._loop.run_until_complete(handshake())
        except aiohttp.WSServerHandshakeError as rejected:
            self.close()
            raise HandshakeRejected(rejected.status, rejected.message) from None
        except BaseException:
            self.close()
            raise


def _transport_factory(graph: GraphConfig):
    def bounded_transport() -> BoundedTransport:
        return BoundedTransport(graph.connect_timeout_s, read_timeout=graph.request_timeout_s,
                                write_timeout=graph.request_timeout_s)
    return bounded_transport


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


def _handshake_headers(graph: GraphConfig) -> dict[str, str] | None:
    """SigV4 headers signed now with fresh credentials, or None when IAM auth is off."""
    if not uses_iam(graph.endpoint, graph.iam_auth):
        return None
    return signed_handshake_headers(graph.endpoint, resolve_region(graph.region),
                                    default_chain_credentials())


class GremlinConnection:
    """The writers' connection: one gremlinpython `Client` with `pool_size=1` (one WebSocket),
    opened on first use, each time with a freshly signed handshake when IAM authentication is
    on. `submit` sends a traversal's bytecode as is; any exception while opening or using the
    connection closes it, and the next `submit` opens a new one."""

    def __init__(self, graph: GraphConfig):
        validate_endpoint(graph.endpoint)
        self.graph = graph
        self._client: Client | None = None

    def open(self) -> "GremlinConnection":
        self._client = Client(self.graph.endpoint, "g", pool_size=1,
                              headers=_handshake_headers(self.graph),
                              transport_factory=_transport_factory(self.graph))
        return self

    def submit(self, traversal: GraphTraversal) -> list:
        """Run `traversal` (built on an unbound source) on the server; its results."""
        try:
            if self._client is None:
                self.open()
            traversers = self._client.submit(traversal.bytecode).all().result()
        except BaseException:
            self.close()
            raise
        return [t.object if isinstance(t, Traverser) else t for t in traversers]

    def close(self) -> None:
        """Close the connection, ignoring errors from one the server already dropped."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a dead connection
                pass
        self._client = None


@contextmanager
def remote_traversal(graph: GraphConfig) -> Iterator[GraphTraversalSource]:
    """`with remote_traversal(config.graph) as g: g.V()...`, for reads and checks, with the
    writers' timeouts; always closed."""
    validate_endpoint(graph.endpoint)
    remote = DriverRemoteConnection(graph.endpoint, "g", pool_size=1,
                                    headers=_handshake_headers(graph),
                                    transport_factory=_transport_factory(graph))
    try:
        yield traversal().with_remote(remote)
    finally:
        remote.close()
