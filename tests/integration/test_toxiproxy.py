"""Toxiproxy in front of the test Gremlin Server, through dev/toxiproxy_client.py: requests pass
through it unchanged, and each fault the other tests use does what it says on the wire: latency
delays, a disabled proxy refuses connections until enabled, reset_peer cuts, timeout goes silent.
After each test the fixture leaves the proxy enabled and without toxics."""
from __future__ import annotations

import socket
import time

import pytest
from gremlin_python.driver.client import Client
from toxiproxy_client import ToxiproxyError


def round_trip_s(endpoint: str, timeout_s: float = 10.0) -> float:
    """Seconds for one connection, handshake and `g.inject(1)` through `endpoint`."""
    started = time.monotonic()
    client = Client(endpoint, "g", pool_size=1, read_timeout=timeout_s, write_timeout=timeout_s)
    try:
        assert client.submit("g.inject(1)").all().result(timeout=timeout_s) == [1]
    finally:
        client.close()
    return time.monotonic() - started


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except ConnectionRefusedError:
        return False


def test_requests_pass_and_latency_delays_them(toxiproxy, gremlin_proxy,
                                               proxied_gremlin_endpoint):
    assert toxiproxy.version() == "v2.12.0"
    plain = round_trip_s(proxied_gremlin_endpoint)
    gremlin_proxy.add_latency(latency_ms=400)
    # One connection's handshake and one request: at least two server-to-client trips.
    assert round_trip_s(proxied_gremlin_endpoint) >= plain + 0.8
    assert [t["type"] for t in gremlin_proxy.toxics()] == ["latency"]


def test_disabled_proxy_refuses_connections_until_enabled(gremlin_proxy,
                                                         proxied_gremlin_endpoint):
    gremlin_proxy.disable()
    assert not connects(gremlin_proxy.port)
    assert gremlin_proxy.state()["enabled"] is False
    gremlin_proxy.enable()
    assert connects(gremlin_proxy.port)
    round_trip_s(proxied_gremlin_endpoint)


def handshake_answer(port: int, timeout_s: float = 2.0) -> bytes:
    """The first bytes Gremlin Server sends back through `port` to a WebSocket handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(b"GET /gremlin HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        return connection.recv(12)


def test_reset_peer_cuts_and_timeout_silences_the_connection(gremlin_proxy):
    assert handshake_answer(gremlin_proxy.port) == b"HTTP/1.1 101"
    name = gremlin_proxy.add_reset_peer(timeout_ms=0)
    with pytest.raises(ConnectionResetError):
        handshake_answer(gremlin_proxy.port)
    gremlin_proxy.remove_toxic(name)
    gremlin_proxy.add_timeout(timeout_ms=0)  # connected, but nothing ever comes back
    with pytest.raises(socket.timeout):
        handshake_answer(gremlin_proxy.port, timeout_s=1.0)


def test_the_fixture_left_the_proxy_enabled_without_toxics(gremlin_proxy):
    """Runs after the tests above, which left toxics and may have left the proxy disabled."""
    state = gremlin_proxy.state()
    assert (state["enabled"], state["toxics"]) == (True, [])


def test_api_errors_carry_toxiproxys_message(toxiproxy, gremlin_proxy):
    with pytest.raises(ToxiproxyError, match="HTTP 404.*proxy not found"):
        toxiproxy.request("GET", "/proxies/no-such-proxy")
    with pytest.raises(ToxiproxyError, match="HTTP 400"):
        gremlin_proxy.add_toxic("bad", "no-such-toxic-type", {})
