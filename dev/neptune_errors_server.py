"""A stand-in for a Neptune endpoint that fails the way Neptune documents: a WebSocket server
(aiohttp) that speaks Gremlin's GraphBinary protocol just enough to answer each request with a
chosen TinkerPop status and Neptune's JSON error body, or that refuses the handshake itself.

    with NeptuneErrorsServer(Answers(error_code="ReadOnlyViolationException")) as server:
        ...  # point graph.endpoint at server.endpoint (ws://127.0.0.1:PORT/gremlin)
    server.handshakes, server.requests   # how many of each it answered

handshake -> after `handshakes_accepted` good ones, `handshake_status` (401, 403) with the
JSON body `{"code": "AccessDeniedException", ...}` -> each request: its id read with
gremlinpython's GraphBinary reader -> when `error_code` is set and the request's text holds
`reject_containing` (every request when empty): `gremlin_status` with the body
`{"requestId", "code", "detailedMessage"}` as status message; else success, one traverser
holding the count 1 (or, when `silent`, no answer at all). Run it alone:
`python dev/neptune_errors_server.py --help`.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import struct
import threading
import uuid
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from gremlin_python.process.traversal import Traverser
from gremlin_python.structure.io import graphbinaryV1

HOST = "127.0.0.1"
_MIME = b"application/vnd.graphbinary-v1.0"
_INT32 = struct.Struct(">i")


@dataclass(frozen=True)
class Answers:
    """What the stand-in answers. `handshake_status` 101 upgrades every handshake."""

    handshake_status: int = 101
    handshakes_accepted: int = 0
    error_code: str = ""
    gremlin_status: int = 500
    detailed_message: str = "injected by dev/neptune_errors_server.py"
    reject_containing: str = ""
    silent: bool = False  # read requests, never answer (a server that hangs)


def read_request(frame: bytes) -> tuple[uuid.UUID, str]:
    """The request id of a GraphBinary request frame (mime length and type, version 0x81, id,
    op, processor, args) and the frame as text, for matching step names and values (which
    GraphBinary carries as UTF-8; gremlinpython's reader cannot read every argument back, a
    predicate `P` for one)."""
    buffer = io.BytesIO(frame)
    mime_length = buffer.read(1)[0]
    if buffer.read(mime_length) != _MIME:
        raise ValueError("not a GraphBinary v1 request")
    buffer.read(1)  # version
    reader = graphbinaryV1.GraphBinaryReader()
    request_id = reader.to_object(buffer, graphbinaryV1.DataType.uuid, nullable=False)
    return request_id, frame.decode("utf-8", errors="replace")


def response_frame(request_id: uuid.UUID, status: int, message: str | None,
                   data: object = None) -> bytes:
    """A GraphBinary response: version, id, status code, message, attributes, meta, data."""
    writer = graphbinaryV1.GraphBinaryWriter()
    frame = bytearray([0x81])
    graphbinaryV1.UuidIO.dictify(request_id, writer, frame, as_value=True, nullable=True)
    frame.extend(_INT32.pack(status))
    if message is None:
        frame.append(0x01)
    else:
        graphbinaryV1.StringIO.dictify(message, writer, frame, as_value=True, nullable=True)
    frame.extend(_INT32.pack(0))  # status attributes
    frame.extend(_INT32.pack(0))  # result meta
    writer.to_dict(data, frame)
    return bytes(frame)


def neptune_error_body(request_id: uuid.UUID, code: str, detailed_message: str) -> str:
    return json.dumps({"requestId": str(request_id), "code": code,
                       "detailedMessage": detailed_message})


class NeptuneErrorsServer:
    """The stand-in on a free loopback port, served from its own thread while in `with`."""

    def __init__(self, answers: Answers, port: int = 0):
        self.answers = answers
        self.handshakes = 0
        self.requests = 0
        self._socket = socket.create_server((HOST, port))
        self.port = self._socket.getsockname()[1]
        self.endpoint = f"ws://{HOST}:{self.port}/gremlin"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="neptune-errors-server")

    def __enter__(self) -> "NeptuneErrorsServer":
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/gremlin", self._gremlin)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.SockSite(runner, self._socket).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _gremlin(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        answers = self.answers
        if answers.handshake_status != 101 and self.handshakes > answers.handshakes_accepted:
            code = "AccessDeniedException" if answers.handshake_status in (401, 403) \
                else "BadRequestException"
            return web.Response(status=answers.handshake_status,
                                content_type="application/json",
                                text=neptune_error_body(uuid.uuid4(), code,
                                                        answers.detailed_message))
        socket_ = web.WebSocketResponse()
        await socket_.prepare(request)
        async for message in socket_:
            if message.type != WSMsgType.BINARY:
                continue
            self.requests += 1
            request_id, gremlin = read_request(message.data)
            if answers.silent:
                continue
            if answers.error_code and answers.reject_containing in gremlin:
                body = neptune_error_body(request_id, answers.error_code,
                                          answers.detailed_message)
                await socket_.send_bytes(response_frame(request_id, answers.gremlin_status,
                                                        body))
            else:
                await socket_.send_bytes(response_frame(request_id, 200, "",
                                                        [Traverser(1, 1)]))
        return socket_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8182)
    parser.add_argument("--handshake-status", type=int, default=101)
    parser.add_argument("--handshakes-accepted", type=int, default=0)
    parser.add_argument("--error-code", default="")
    parser.add_argument("--gremlin-status", type=int, default=500)
    parser.add_argument("--reject-containing", default="")
    args = parser.parse_args()
    answers = Answers(args.handshake_status, args.handshakes_accepted, args.error_code,
                      args.gremlin_status, reject_containing=args.reject_containing)
    with NeptuneErrorsServer(answers, args.port) as server:
        print(f"GREMLIN_ENDPOINT={server.endpoint}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
