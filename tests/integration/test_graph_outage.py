"""The Gremlin endpoint goes away in the middle of a partition's write and comes back: with a
retry budget that outlasts the outage, every row is written and none fails.

Toxiproxy stands between the writer and Gremlin Server. Once part of the partition is in the
graph, the proxy is disabled (its open connections cut, new ones refused, as during a Neptune
failover or reboot) for OUTAGE_S seconds, then a background thread enables it again."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

from gremlin_python.process.traversal import T

from imagegraph.graph.load import write_model
from imagegraph.graph.writer import write_partition
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b", "c"))
ROWS, OUTAGE_S = 100, 4.0


def prediction(n: int) -> dict:
    return {"uri": f"s3://b/img{n}.png", "bucket": "b", "key": f"img{n}.png", "bytes": 100 + n,
            "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": ["a", "b"], "scores": [0.7, 0.2]}


def outage_once_written(graph, proxy, images: int, outage_s: float) -> threading.Thread:
    """A started thread that waits until the graph holds `images` image vertices (or 60 s),
    disables `proxy` for `outage_s` seconds, and enables it again."""
    def run():
        deadline = time.monotonic() + 60
        while (graph.V().has_label("image").count().next() < images
               and time.monotonic() < deadline):
            time.sleep(0.05)
        proxy.disable()
        time.sleep(outage_s)
        proxy.enable()

    thread = threading.Thread(target=run, name="outage", daemon=True)
    thread.start()
    return thread


def test_write_outlasts_an_endpoint_outage_with_no_failed_row(graph, config, gremlin_proxy,
                                                              proxied_gremlin_endpoint):
    graph.V().drop().iterate()
    write_model(config.graph, METADATA)
    # Three attempts, as an attempt-count budget, would give up within about a second; lost
    # connections are retried for failover_budget_s (20 s) instead, which outlasts the 4 s
    # outage. Short waits keep the test quick after the outage.
    settings = replace(config.graph, endpoint=proxied_gremlin_endpoint, rows_per_flush=10,
                       max_attempts=3, retry_base_delay_s=0.25, retry_max_delay_s=1.0,
                       failover_budget_s=20, request_timeout_s=10)
    gremlin_proxy.add_latency(latency_ms=50)  # ~2 s of writing: the outage lands mid-write
    outage = outage_once_written(graph, gremlin_proxy, images=20, outage_s=OUTAGE_S)
    started = time.monotonic()
    writer = write_partition([prediction(n) for n in range(ROWS)], settings, "m@1", "run-1")
    elapsed = time.monotonic() - started
    outage.join(timeout=60)

    assert not outage.is_alive()
    assert (writer.stats.rows_written, writer.stats.failed_rows, writer.failed) == (ROWS, 0, {})
    assert writer.stats.retries >= 1 and elapsed >= OUTAGE_S  # the outage hit the write
    assert graph.V().group_count().by(T.label).next() == {"image": ROWS, "class": 3, "model": 1}
    assert graph.E().has_label("classified_as").count().next() == 2 * ROWS


def test_an_outage_longer_than_the_failover_budget_stops_the_writer_cleanly(
        graph, config, gremlin_proxy, proxied_gremlin_endpoint):
    """The endpoint stays away past failover_budget_s (2 s of a 6 s outage): the writer stops
    with one line naming the budget, dead-letters nothing (the rows are not its fault), and
    does not hang."""
    graph.V().drop().iterate()
    write_model(config.graph, METADATA)
    settings = replace(config.graph, endpoint=proxied_gremlin_endpoint, rows_per_flush=10,
                       retry_base_delay_s=0.25, retry_max_delay_s=1.0, failover_budget_s=2,
                       request_timeout_s=10)
    gremlin_proxy.add_latency(latency_ms=50)
    outage = outage_once_written(graph, gremlin_proxy, images=20, outage_s=6.0)
    writer = write_partition([prediction(n) for n in range(ROWS)], settings, "m@1", "run-1")
    outage.join(timeout=60)

    assert "no connection for graph.failover_budget_s=2 s" in writer.stopped
    assert "\n" not in writer.stopped
    assert writer.failed == {} and 0 < writer.stats.rows_written < ROWS
