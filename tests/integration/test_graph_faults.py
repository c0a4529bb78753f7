"""Faults while loading into the graph through Spark: the Gremlin Server stopped in the middle
of the write and started again; a row the server rejects. Every row ends up written exactly
once or dead-lettered, never lost and never duplicated."""
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T

from imagegraph.graph.connection import remote_traversal
from imagegraph.graph.load import load_predictions, write_model
from imagegraph.model_artifact import ModelMetadata

METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b", "c"))
AT = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
ROWS = 1500


def predictions(spark, count: int, bad: set[int] = frozenset()):
    rows = [(f"s3://b/img{n}.png", "b", f"img{n}.png", 100 + n, 8, 8, "PNG", f"{n:064x}",
             ["a", "no-such-class" if n in bad else "b"], [0.7, 0.2]) for n in range(count)]
    return spark.createDataFrame(rows, "uri string, bucket string, key string, bytes long, "
                                       "width int, height int, format string, sha256 string, "
                                       "labels array<string>, scores array<float>"
                                 ).repartition(2)


def image_count(graph_config) -> int:
    with remote_traversal(graph_config) as g:
        return g.V().has_label("image").count().next()


def test_server_restart_mid_write_loses_and_duplicates_nothing(spark, config,
                                                               restartable_gremlin):
    endpoint, restart = restartable_gremlin
    graph = replace(config.graph, endpoint=endpoint, records_per_request=24, rows_per_flush=50,
                    max_attempts=40, retry_base_delay_s=0.2, retry_max_delay_s=2.0,
                    retry_max_elapsed_s=120.0)
    write_model(graph, METADATA)
    outcome = {}

    def load():
        outcome["result"] = load_predictions(spark, graph, predictions(spark, ROWS), "m@1",
                                             "run-1", AT)

    loader = threading.Thread(target=load)
    loader.start()
    deadline = time.monotonic() + 60
    while image_count(graph) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    written_before_restart = image_count(graph)
    restart()
    loader.join(timeout=300)
    totals, failed = outcome["result"]
    try:
        assert written_before_restart < ROWS, "the load finished before the restart"
        assert failed.count() == 0
        assert totals.failed_rows == 0 and totals.rows_written == ROWS
        assert totals.retries > 0
    finally:
        failed.unpersist()
    with remote_traversal(graph) as g:
        assert g.V().has_label("image").count().next() == ROWS
        assert g.E().has_label("classified_as").count().next() == 2 * ROWS
        per_image = g.V().has_label("image").group_count().by(
            __.out_e("classified_as").count()).next()
        assert per_image == {2: ROWS}
        assert g.V().has_label("class").count().next() == 3


def test_rejected_rows_come_back_as_failed_rows(spark, config, graph):
    graph.V().drop().iterate()
    write_model(config.graph, METADATA)
    totals, failed = load_predictions(spark, config.graph, predictions(spark, 40, bad={7, 31}),
                                      "m@1", "run-1", AT)
    try:
        rows = sorted((r["uri"], r["reason"]) for r in failed.collect())
    finally:
        failed.unpersist()
    assert [uri for uri, _ in rows] == ["s3://b/img31.png", "s3://b/img7.png"]
    assert all("no-such-class" in reason for _, reason in rows)
    assert (totals.rows_written, totals.failed_rows) == (38, 2)
    assert graph.V().has_label("image").count().next() == 40
    assert graph.V("s3://b/img8.png").out_e("classified_as").count().next() == 2
    assert graph.V("s3://b/img8.png").element_map().next()[T.label] == "image"
