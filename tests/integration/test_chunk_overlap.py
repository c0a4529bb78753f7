"""Chunks pipelined: chunk k+1 is read and classified while chunk k is written to the graph, and
a graph load that stops the run cancels the classification in flight.

The graph writes go through Toxiproxy (a latency toxic on what the writers send holds them up);
the workers' object reads go through the S3 fault proxy (which records and can hold them). Which
chunk an object belongs to is computed with the job's own expression."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest
import sample_images
from conftest import BUCKET, DIGITS_USED
from pyspark.sql import functions as F
from s3_fault_proxy import S3FaultProxy
from test_run_faults import (
    assert_every_image_exactly_once,
    empty_graph,
    finished,
    put,
    run_in_thread,
    through,
)

from imagegraph.errors import JobError
from imagegraph.graph.connection import remote_traversal
from imagegraph.infer.background import BackgroundJobs
from imagegraph.storage.outputs import PREDICTIONS_DIR

CHUNKS = 3
OBJECTS = 90


@pytest.fixture(scope="module")
def digits() -> dict[str, bytes]:
    """{'<digit>/<n>.png': bytes}: 90 real digits, none of those the test model trained on."""
    train, held_out = sample_images.digit_images(limit=DIGITS_USED + OBJECTS)
    return {key: data for key, data in {**train, **held_out}.items()
            if int(key.split("/")[1][:-4]) >= DIGITS_USED}


def chunk_of(spark, uris) -> dict[str, int]:
    """{uri: chunk index} as `run_inference` splits `CHUNKS` chunks."""
    rows = (spark.createDataFrame([(uri,) for uri in uris], "uri string")
            .select("uri", F.pmod(F.xxhash64("uri"), F.lit(CHUNKS)).alias("chunk")).collect())
    return {row["uri"]: row["chunk"] for row in rows}


def read_chunks(proxy: S3FaultProxy, chunks: dict[str, int]) -> set[int]:
    """The chunks of which the workers have read at least one object through `proxy`."""
    return {chunks[f"s3:/{path}"] for path in list(proxy.gets) if f"s3:/{path}" in chunks}


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def images_in_graph(graph_config) -> int:
    with remote_traversal(graph_config) as g:
        return g.V().has_label("image").count().next()


def prepare(spark, config, s3, digits, prefix: str) -> tuple[dict[str, str], dict[str, int], str]:
    """The digits put under `prefix`/ and an empty graph: ({uri: sha256}, {uri: chunk}, the
    run's output URI)."""
    expected = put(s3, BUCKET, f"{prefix}/", digits)
    empty_graph(config.graph)
    return expected, chunk_of(spark, expected), f"s3a://{BUCKET}/{prefix}-out"


def chunked(config, proxy: S3FaultProxy, gremlin_endpoint: str, **graph):
    return through(proxy, replace(
        config, run=replace(config.run, objects_per_chunk=OBJECTS // CHUNKS),
        graph=replace(config.graph, endpoint=gremlin_endpoint, rows_per_flush=10,
                      records_per_request=40, **graph)))


def test_next_chunk_is_classified_while_the_graph_load_waits(
        spark, config, s3, trained_model, digits, gremlin_proxy, proxied_gremlin_endpoint):
    expected, chunks, output = prepare(spark, config, s3, digits, "overlap")
    with S3FaultProxy(config.s3.endpoint) as proxy:
        run_config = chunked(config, proxy, proxied_gremlin_endpoint, connect_timeout_s=60.0)
        thread, outcome = run_in_thread(spark, run_config, f"s3a://{BUCKET}/overlap/", output,
                                        "overlap")
        wait_for(lambda: read_chunks(proxy, chunks), 300, "the first chunk's reads")
        held = gremlin_proxy.add_latency(20_000, stream="upstream")  # writes wait 20 s each
        try:
            wait_for(lambda: len(read_chunks(proxy, chunks)) > 1, 60,
                     "a second chunk's reads while the first chunk's graph writes are held")
            first_chunk = sum(1 for chunk in chunks.values() if chunk == 0)
            assert images_in_graph(config.graph) < first_chunk
        finally:
            gremlin_proxy.remove_toxic(held)
        report = finished(thread, outcome)
    assert report.chunks == CHUNKS
    assert_every_image_exactly_once(report, config.graph, expected, spark, output)


def test_a_graph_load_that_stops_the_run_cancels_the_classification_in_flight(
        spark, config, s3, trained_model, digits, gremlin_proxy, proxied_gremlin_endpoint):
    _, chunks, output = prepare(spark, config, s3, digits, "overlap-stop")
    with S3FaultProxy(config.s3.endpoint) as proxy:
        run_config = chunked(config, proxy, proxied_gremlin_endpoint, failover_budget_s=3.0,
                             connect_timeout_s=1.0)
        thread, outcome = run_in_thread(spark, run_config, f"s3a://{BUCKET}/overlap-stop/",
                                        output, "overlap-stop")
        wait_for(lambda: read_chunks(proxy, chunks), 300, "the first chunk's reads")
        gremlin_proxy.disable()  # the first chunk's graph load loses the endpoint
        # and one of the second chunk's objects is never read until the run gives up: its
        # task holds a slot to the end (the other slot serves the load, then the rest)
        proxy.hold(frozenset({next(uri[len("s3:/"):] for uri in sorted(chunks)
                                   if chunks[uri] == 1)}))
        try:
            with pytest.raises(JobError, match="graph writes to .* stopped: no connection"):
                finished(thread, outcome, timeout_s=300)
            assert proxy.held == 1  # the classification was in flight, and was not waited for
        finally:
            proxy.release()
            gremlin_proxy.enable()
    assert not any(key.startswith(f"overlap-stop-out/{PREDICTIONS_DIR}/") and
                   key.endswith(".parquet") for key in
                   (o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="overlap-stop-out/")
                    .get("Contents", [])))


def test_a_failed_background_load_cancels_a_classification_started_after_it(spark):
    """The background fails while no foreground job runs (its cancel finds nothing); the job
    the foreground starts next is cancelled too, and the foreground raises the failure."""
    def fail():
        time.sleep(0.5)  # the foreground's work has begun, its job not yet
        raise JobError("graph writes stopped")

    def classify():
        time.sleep(1.5)  # the background has failed and cancelled by now
        return spark.sparkContext.parallelize(range(2), 2).map(
            lambda n: time.sleep(60) or n).sum()

    with pytest.raises(JobError, match="graph writes stopped"):
        with BackgroundJobs(spark.sparkContext, "cancel-later") as jobs:
            jobs.submit(fail)
            with pytest.raises(JobError, match="graph writes stopped"):
                jobs.run_in_foreground(classify)
