"""Faults while loading into the graph through Spark: a row the server rejects ends up
dead-lettered, every other row written exactly once. (The Gremlin Server restarted in the middle
of a load is in test_run_faults.py, through a whole run.)"""

from gremlin_python.process.traversal import T

from imagegraph.graph.load import load_predictions, write_model
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b", "c"))


def predictions(spark, count: int, bad: set[int] = frozenset()):
    rows = [(f"s3://b/img{n}.png", "b", f"img{n}.png", 100 + n, 8, 8, "PNG", f"{n:064x}",
             ["a", "no-such-class" if n in bad else "b"], [0.7, 0.2]) for n in range(count)]
    return spark.createDataFrame(rows, "uri string, bucket string, key string, bytes long, "
                                       "width int, height int, format string, sha256 string, "
                                       "labels array<string>, scores array<float>"
                                 ).repartition(2)


def test_rejected_rows_come_back_as_failed_rows(spark, config, graph, tmp_path):
    graph.V().drop().iterate()
    write_model(config.graph, METADATA)
    load = load_predictions(spark, config.graph, predictions(spark, 40, bad={7, 31}),
                            "m@1", "run-1", f"file://{tmp_path}/outcome")
    rows = sorted((r["uri"], r["reason"]) for r in load.failed.collect())
    assert [uri for uri, _ in rows] == ["s3://b/img31.png", "s3://b/img7.png"]
    assert all("no-such-class" in reason for _, reason in rows)
    assert (load.totals.rows_written, load.totals.failed_rows) == (38, 2)
    assert load.stopped == ()
    assert graph.V().has_label("image").count().next() == 40
    assert graph.V("s3://b/img8.png").out_e("classified_as").count().next() == 2
    assert graph.V("s3://b/img8.png").element_map().next()[T.label] == "image"
