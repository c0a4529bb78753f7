"""Concurrent writers conflict on the local graph as they do on Neptune, and lose nothing.

Four partition writers (`write_partition`, each with its own connection, in threads) write
disjoint rows whose classified_as edges all point at the same 10 `class:` vertices. Gremlin
Server runs them concurrently over the transactional TinkerGraph, so requests that touch the
same class vertex at once conflict: the losing request is rolled back and fails with
"Conflict: element modified in another transaction" (status 500), the local form of Neptune's
ConcurrentModificationException. The writers must retry it, and the graph must end exact; so
must one partition that writes the same rows over four connections of its own."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import urlsplit

from gremlin_python.process.traversal import T
from handshake_recorder import HandshakeRecorder

from imagegraph.graph.elements import class_id, classified_as_id
from imagegraph.graph.load import write_model
from imagegraph.graph.writer import write_partition
from imagegraph.model.artifact import ModelMetadata

CLASSES = tuple(f"c{n}" for n in range(10))
METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=CLASSES)
WRITERS, ROWS_PER_WRITER, TOP_K = 4, 100, 3


def prediction(n: int) -> dict:
    """Row n, whose top-3 classes are c(n), c(n+1), c(n+2) (mod 10)."""
    return {"uri": f"s3://b/img{n}.png", "bucket": "b", "key": f"img{n}.png", "bytes": 100 + n,
            "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": [CLASSES[(n + k) % len(CLASSES)] for k in range(TOP_K)],
            "scores": [0.5, 0.3, 0.2]}


def conflicting_settings(graph, config):
    """An empty graph with the model written, and writer settings that retry conflicts."""
    graph.V().drop().iterate()
    settings = replace(config.graph, rows_per_flush=20, max_attempts=30,
                       retry_base_delay_s=0.02, retry_max_delay_s=0.5, failover_budget_s=60)
    write_model(settings, METADATA)
    return settings


def test_concurrent_writers_on_shared_class_vertices_retry_conflicts_and_end_exact(graph,
                                                                                   config):
    settings = conflicting_settings(graph, config)
    partitions = [[prediction(n) for n in range(w * ROWS_PER_WRITER, (w + 1) * ROWS_PER_WRITER)]
                  for w in range(WRITERS)]
    with ThreadPoolExecutor(WRITERS) as pool:
        writers = list(pool.map(lambda rows: write_partition(rows, settings, "m@1", "run-1"),
                                partitions))

    assert [(w.stats.rows_written, w.stats.failed_rows, w.failed) for w in writers] == [
        (ROWS_PER_WRITER, 0, {})] * WRITERS
    assert_graph_exact(graph, partitions)
    assert sum(w.stats.retries for w in writers) >= 1, "no conflict was retried"


def test_one_partition_writes_over_its_connections_at_once_and_ends_exact(graph, config):
    """`write_partition` with 4 connections: 4 WebSocket handshakes (and one per retry), every
    row once, the counts of its 4 writers summed."""
    settings = conflicting_settings(graph, config)
    rows = [prediction(n) for n in range(WRITERS * ROWS_PER_WRITER)]
    server = urlsplit(config.graph.endpoint)
    with HandshakeRecorder(server.hostname, server.port) as recorder:
        proxied = replace(settings, endpoint=f"ws://127.0.0.1:{recorder.port}/gremlin")
        written = write_partition(iter(rows), proxied, "m@1", "run-1", connections=WRITERS)
    # a connection is opened by each writer, and again after each failed request (a retry)
    assert len(recorder.heads) == WRITERS + written.stats.retries
    assert (written.stats.rows_written, written.stats.vertices, written.stats.edges,
            written.failed, written.stopped) == (len(rows), len(rows), len(rows) * TOP_K, {}, "")
    assert_graph_exact(graph, [rows])


def assert_graph_exact(graph, partitions: list[list[dict]]) -> None:
    """The graph holds the model, its classes, and exactly the images of `partitions` with
    their TOP_K edges each."""
    rows = sum(len(rows_of_writer) for rows_of_writer in partitions)
    assert graph.V().group_count().by(T.label).next() == {
        "image": rows, "class": len(CLASSES), "model": 1}
    assert graph.E().group_count().by(T.label).next() == {
        "classified_as": rows * TOP_K, "has_class": len(CLASSES)}
    expected_edges = {classified_as_id(row["uri"], "m@1", label)
                      for rows_of_writer in partitions for row in rows_of_writer
                      for label in row["labels"]}
    assert set(graph.E().has_label("classified_as").id_().to_list()) == expected_edges
    assert set(graph.V().has_label("image").id_().to_list()) == {
        row["uri"] for rows_of_writer in partitions for row in rows_of_writer}
    assert set(graph.V().has_label("class").id_().to_list()) == {class_id(c) for c in CLASSES}
