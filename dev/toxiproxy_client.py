"""A small client for Toxiproxy's HTTP API (v2), for the integration tests' network faults.

Toxiproxy (built by `make toxiproxy`, started by dev/services.py) relays TCP between a listen
address and an upstream. Through its API a test creates a proxy in front of a server, then
injects faults on the wire: latency, a connection reset by the peer, a socket that stops
passing data (`timeout`), or the whole proxy disabled (listener closed, every open connection
cut, new connections refused) until it is enabled again.

    api = ToxiproxyClient("http://127.0.0.1:8474")
    gremlin = api.create_proxy("gremlin", listen_port=free_port(), upstream="127.0.0.1:8182")
    gremlin.add_latency(latency_ms=200)
    gremlin.disable(); ...; gremlin.enable()
    api.reset()           # every proxy enabled, every toxic removed

Plain urllib and json: the one Python client on PyPI (toxiproxy-python 0.1.1) is unmaintained
since 2019. Any answer other than 2xx raises `ToxiproxyError` with Toxiproxy's own message.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

REQUEST_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


class ToxiproxyError(RuntimeError):
    """Toxiproxy's API refused a request or could not be reached."""


@dataclass(frozen=True)
class ToxiproxyClient:
    """Toxiproxy's HTTP API at `url` (http://host:port)."""

    url: str

    def request(self, method: str, path: str, body: dict | None = None) -> dict | list | None:
        """Send `method path` with a JSON `body`; the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise ToxiproxyError(f"{method} {path}: HTTP {error.code} "
                                 f"{error.read().decode(errors='replace').strip()}") from None
        except OSError as error:
            raise ToxiproxyError(f"{method} {path}: {error}") from None
        return json.loads(payload) if payload.strip() else None

    def version(self) -> str:
        """The server's version (`make toxiproxy` stamps it, e.g. 'v2.12.0')."""
        answer = self.request("GET", "/version")
        return answer["version"] if isinstance(answer, dict) else str(answer)

    def create_proxy(self, name: str, listen_port: int, upstream: str) -> "Proxy":
        """A new enabled proxy `name` listening on HOST:`listen_port`, relaying to `upstream`
        ('host:port'); an existing proxy of that name is replaced."""
        if name in self.request("GET", "/proxies"):
            self.request("DELETE", f"/proxies/{name}")
        self.request("POST", "/proxies", {"name": name, "listen": f"{HOST}:{listen_port}",
                                          "upstream": upstream, "enabled": True})
        return Proxy(self, name, HOST, listen_port)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self.request("POST", "/reset")


@dataclass(frozen=True)
class Proxy:
    """One proxy: clients connect to `host`:`port` instead of the upstream server."""

    api: ToxiproxyClient
    name: str
    host: str
    port: int

    def state(self) -> dict:
        """Toxiproxy's view of the proxy: name, listen, upstream, enabled, toxics."""
        return self.api.request("GET", f"/proxies/{self.name}")

    def disable(self) -> None:
        """Close the listener and every open connection: new connections are refused."""
        self.api.request("PATCH", f"/proxies/{self.name}", {"enabled": False})

    def enable(self) -> None:
        """Listen again."""
        self.api.request("PATCH", f"/proxies/{self.name}", {"enabled": True})

    def add_toxic(self, name: str, kind: str, attributes: dict, stream: str = "downstream",
                  toxicity: float = 1.0) -> str:
        """Add toxic `name` of type `kind` on `stream` ('downstream': server to client, or
        'upstream') to a share `toxicity` (0..1) of connections; returns `name`."""
        self.api.request("POST", f"/proxies/{self.name}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": toxicity,
            "attributes": attributes})
        return name

    def add_latency(self, latency_ms: int, jitter_ms: int = 0,
                    stream: str = "downstream") -> str:
        """Delay data by `latency_ms` +- `jitter_ms` milliseconds."""
        return self.add_toxic(f"latency_{stream}", "latency",
                              {"latency": latency_ms, "jitter": jitter_ms}, stream)

    def add_reset_peer(self, timeout_ms: int = 0, stream: str = "downstream") -> str:
        """Reset each connection (TCP RST) `timeout_ms` milliseconds after data arrives."""
        return self.add_toxic(f"reset_peer_{stream}", "reset_peer", {"timeout": timeout_ms},
                              stream)

    def add_timeout(self, timeout_ms: int = 0, stream: str = "downstream") -> str:
        """Stop passing data: the connection stays open and silent, and is closed after
        `timeout_ms` milliseconds (0: never, a half-open socket)."""
        return self.add_toxic(f"timeout_{stream}", "timeout", {"timeout": timeout_ms}, stream)

    def remove_toxic(self, name: str) -> None:
        self.api.request("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def toxics(self) -> list[dict]:
        return self.api.request("GET", f"/proxies/{self.name}/toxics")
