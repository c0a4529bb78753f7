"""Neptune's failure modes against servers that speak the Gremlin protocol: the stand-in of
dev/neptune_errors_server.py for what Gremlin Server cannot show (a handshake refused with
403 or 401, Neptune's JSON error bodies, a server that never answers), the real Gremlin Server
for a malformed row among good ones. Every call that could hang runs in a thread with a
deadline."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest
from neptune_errors_server import Answers, NeptuneErrorsServer

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.load import write_model
from imagegraph.graph.writer import GraphWriter, write_partition
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b", "c"))
FAST = {"retry_base_delay_s": 0.05, "retry_max_delay_s": 0.2, "connect_timeout_s": 2.0,
        "request_timeout_s": 2.0}


def prediction(n: int, label: str = "b") -> dict:
    return {"uri": f"s3://b/img{n}.png", "bucket": "b", "key": f"img{n}.png", "bytes": 100 + n,
            "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": ["a", label], "scores": [0.7, 0.2]}


def within(seconds: float, call):
    """`call()`'s result, failing the test (instead of hanging it) after `seconds`."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], time.monotonic() - started


@pytest.mark.parametrize("status", [403, 401])
def test_handshake_refused_stops_the_writer_within_seconds(status):
    with NeptuneErrorsServer(Answers(handshake_status=status)) as server:
        graph = GraphConfig(endpoint=server.endpoint, **FAST)
        writer, elapsed = within(20, lambda: write_partition(
            (prediction(n) for n in range(20)), graph, "m@1", "run-1"))
    assert elapsed < 5
    assert writer.stopped.startswith(f"graph writes to {server.endpoint} stopped: permission "
                                     f"denied (HTTP {status} ")
    assert "neptune-db:connect" in writer.stopped and "\n" not in writer.stopped
    assert writer.failed == {} and writer.stats.rows_written == 0
    assert server.handshakes == 1 and writer.stats.requests == 1


def test_a_refused_handshake_stops_every_connection_of_a_partition():
    """Four connections, eight flushes: each writer stops at its first handshake, and no flush
    is handed out after a stop, so no row is written, failed or sent twice."""
    with NeptuneErrorsServer(Answers(handshake_status=403)) as server:
        graph = GraphConfig(endpoint=server.endpoint, rows_per_flush=5, **FAST)
        written, _ = within(20, lambda: write_partition(
            (prediction(n) for n in range(40)), graph, "m@1", "run-1", connections=4))
    assert written.stopped.startswith(f"graph writes to {server.endpoint} stopped: permission "
                                      "denied (HTTP 403 ")
    assert written.failed == {} and written.stats.rows_written == 0
    assert 1 <= server.handshakes == written.stats.requests <= 4


def test_a_writer_that_stops_stops_the_other_writers_of_its_partition():
    """One connection is accepted and its requests succeed; the other three are refused (403)
    and their writers stop. From then on no flush is handed out: the accepted writer ends
    with the flush it has, far from taking the 16 flushes left to it."""
    with NeptuneErrorsServer(Answers(handshake_status=403, handshakes_accepted=1)) as server:
        graph = GraphConfig(endpoint=server.endpoint, rows_per_flush=5, **FAST)
        written, _ = within(20, lambda: write_partition(
            (prediction(n) for n in range(80)), graph, "m@1", "run-1", connections=4))
    assert "permission denied (HTTP 403" in written.stopped and written.failed == {}
    assert 0 < written.stats.rows_written < 40


def test_credentials_that_stop_working_mid_run_stop_the_writer():
    """The first connection is accepted, the server then drops it (as a failover would) and
    refuses every later handshake with 403: the writer stops instead of waiting on a pool."""
    answers = Answers(handshake_status=403, handshakes_accepted=1,
                      error_code="ReadOnlyViolationException")
    with NeptuneErrorsServer(answers) as server:
        graph = GraphConfig(endpoint=server.endpoint, **FAST)
        writer, elapsed = within(20, lambda: write_partition(
            (prediction(n) for n in range(20)), graph, "m@1", "run-1"))
    assert elapsed < 5 and "permission denied (HTTP 403" in writer.stopped
    assert server.handshakes == 2 and writer.failed == {}


def test_a_server_that_never_answers_is_bounded_by_the_failover_budget():
    with NeptuneErrorsServer(Answers(silent=True)) as server:
        graph = GraphConfig(endpoint=server.endpoint, **{**FAST, "request_timeout_s": 0.5},
                            failover_budget_s=3.0)
        writer, elapsed = within(30, lambda: write_partition(
            (prediction(n) for n in range(5)), graph, "m@1", "run-1"))
    # requests of 0.5 s each until the next would start after the 3 s budget
    assert 2.5 <= elapsed < 10
    assert "no connection for graph.failover_budget_s=3 s (TimeoutError" in writer.stopped
    assert server.handshakes == writer.stats.requests > 2 and writer.failed == {}


@pytest.mark.parametrize("answers, line", [
    # a reader endpoint: every write refused as read-only, also after reconnects for the
    # failover budget
    (Answers(error_code="ReadOnlyViolationException"),
     "stopped: the endpoint refused writes for graph.failover_budget_s=1 s, "),
    # an engine without mergeV (Neptune before 1.2.1.0)
    (Answers(error_code="MalformedQueryException", gremlin_status=499,
             detailed_message="Unsupported step: mergeV", reject_containing="mergeV"),
     "stopped: unsupported step (MalformedQueryException: Unsupported step: mergeV); the "
     "engine lacks a step the writer uses: upgrade Neptune to engine 1.3.2.0 or later, or set "
     "graph.upsert_style=coalesce"),
    # a role without the delete permission that an image request's drop() needs (Neptune
    # authorizes a request with a drop() step as DeleteDataViaQuery)
    (Answers(error_code="AccessDeniedException", gremlin_status=500, reject_containing="drop"),
     "stopped: permission denied (AccessDeniedException: injected by "
     "dev/neptune_errors_server.py); check the IAM policy"),
])
def test_startup_probe_stops_the_job_with_one_line(answers, line):
    with NeptuneErrorsServer(answers) as server:
        graph = GraphConfig(endpoint=server.endpoint, max_attempts=3, failover_budget_s=1.0,
                            **FAST)
        with pytest.raises(JobError) as stopped:
            within(20, lambda: write_model(graph, METADATA))
    message = str(stopped.value)
    assert message.startswith(f"graph writes to {server.endpoint} {line}")
    assert "\n" not in message


def test_startup_probe_of_an_endpoint_that_does_not_answer():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    graph = GraphConfig(endpoint=f"ws://127.0.0.1:{port}/gremlin", **FAST)
    with pytest.raises(JobError, match=rf"^cannot reach the Gremlin endpoint ws://127.0.0.1:"
                                       rf"{port}/gremlin: ClientConnectorError") as stopped:
        within(30, lambda: write_model(graph, METADATA))
    assert "\n" not in str(stopped.value)


def test_a_handshake_that_never_completes_is_bounded_by_the_connect_timeout():
    """A socket that listens and never answers: the kernel completes TCP, nothing answers the
    HTTP upgrade. The startup probe gives it connect_timeout_s (2 s)."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        graph = GraphConfig(endpoint=f"ws://127.0.0.1:{port}/gremlin", **FAST)
        started = time.monotonic()
        with pytest.raises(JobError, match=r"^cannot reach the Gremlin endpoint .*: TimeoutError"):
            within(30, lambda: write_model(graph, METADATA))
    assert 2.0 <= time.monotonic() - started < 6


def test_one_malformed_row_among_200_is_isolated_with_a_counted_split(graph, config):
    """Against the real Gremlin Server: row 0's second edge points at a class vertex that does
    not exist, which mergeE rejects; everything else is written."""
    graph.V().drop().iterate()
    write_model(config.graph, METADATA)
    settings = replace(config.graph, records_per_request=100_000,
                       max_steps_per_request=1_000_000, rows_per_flush=200, **FAST)
    writer = GraphWriter(GremlinConnection(settings), settings)
    rows = [prediction(n) for n in range(200)]
    rows[0] = prediction(0, "no-such-class")
    within(60, lambda: writer.write_predictions(rows, "m@1", "run-1"))
    writer.connection.close()
    assert list(writer.failed) == ["s3://b/img0.png"] and writer.stopped == ""
    assert writer.stats.rows_written == 199
    # 1 request of 200 vertices, 1 of 400 edges; the bad edge is the second: halves of 200,
    # 100, 50, 25, then 12 of 25, 6, 3, then 2 of 3, then 1 of 2: 9 splits of 2 requests
    assert writer.stats.requests == 1 + 1 + 9 * 2
    assert graph.V().has_label("image").count().next() == 200
    assert graph.E().has_label("classified_as").count().next() == 399
