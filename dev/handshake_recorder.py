"""A TCP relay that keeps the HTTP request head of every connection it relays: put in front
of Gremlin Server, it shows the WebSocket handshakes a job sent (with their SigV4 headers),
which Gremlin Server itself accepts without looking at them. A subclass may refuse a
connection by its request head (`refusal`) instead of relaying it.

    with HandshakeRecorder("127.0.0.1", gremlin_port) as recorder:
        ...  # connect to ws://127.0.0.1:{recorder.port}/gremlin
    recorder.heads   # [b'GET /gremlin HTTP/1.1\\r\\nHost: ...', ...]

Standard library only; a thread per direction of each connection.
"""
from __future__ import annotations

import socket
import threading

HOST = "127.0.0.1"


class HandshakeRecorder:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.2)  # a blocked accept() does not notice a close()
        self._stopping = threading.Event()
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="handshake-recorder")

    def __enter__(self) -> "HandshakeRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def refusal(self, head: bytes) -> bytes | None:
        """The HTTP response to send instead of relaying the connection whose request head is
        `head`, or None to relay it (always, here; see `sigv4_gate.SigV4Gate`)."""
        return None

    def _relay(self, client: socket.socket) -> None:
        with client:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = client.recv(65536)
                if not chunk:
                    return
                received += chunk
            head = received.split(b"\r\n\r\n", 1)[0]
            with self._lock:
                self.heads.append(head)
            response = self.refusal(head)
            if response is not None:
                client.sendall(response)
                return
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(received)
                back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                back.start()
                _pump(client, upstream)
                back.join()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until `source` ends, then end `target`'s direction too."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:  # the other side reset the connection
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
