"""What `--resume` takes as done (`outputs.done_uris`): by model and by the graph endpoint the
predictions were written to, against Parquet written as the job writes it."""
from __future__ import annotations

from datetime import datetime, timezone

from imagegraph.storage.outputs import (
    PREDICTIONS_DIR,
    done_uris,
    split_done,
    write_dead_letters,
    write_predictions,
)

A, B = "ws://a:8182/gremlin", "wss://b:8182/gremlin"


def test_predictions_are_done_for_their_own_graph_endpoint_and_final_dead_letters_for_any(
        spark, tmp_path):
    """`off` was committed with the graph off, `to-a` to endpoint A, `legacy` before endpoints
    were recorded (no column), `other-model` by another model; `final` and `retry` are dead
    letters. Each endpoint's run takes as done its own predictions and the final dead letter;
    a graph-off run, every prediction of its model."""
    output = f"file://{tmp_path}/out"
    rows = "uri string, model string, run_id string"
    write_predictions(spark.createDataFrame([("off", "m@1", "r1")], rows), output, "r1", "")
    write_predictions(spark.createDataFrame([("to-a", "m@1", "r2"), ("other-model", "n@1", "r2")],
                                            rows), output, "r2", A)
    spark.createDataFrame([("legacy", "m@1")], "uri string, model string") \
        .write.parquet(f"{output}/{PREDICTIONS_DIR}/run_id=r0")
    write_dead_letters(spark.createDataFrame(
        [("final", "e1", "decode", "not an image: text", False, 4, "m@1", "r3"),
         ("retry", "e1", "read", "read failed: SlowDown", True, 4, "m@1", "r3")],
        "uri string, etag string, stage string, reason string, retryable boolean, "
        "bytes long, model string, run_id string"), output, "r3", datetime.now(timezone.utc))

    def done(endpoint: str) -> list[str]:
        return sorted(row.uri for row in done_uris(spark, output, "m@1", endpoint).collect())

    assert done(A) == ["final", "to-a"]
    assert done(B) == ["final"]
    assert done("") == ["final", "legacy", "off", "to-a"]


def test_an_object_is_done_only_in_the_version_finished_or_when_a_side_has_no_etag(spark):
    """`same` was finished in the version listed, `changed` in another, `legacy` by a row from
    before etags were recorded, `unlisted-etag` is listed without one (a manifest); `new` was
    never finished. Every listed row is on exactly one side."""
    done = spark.createDataFrame(
        [("same", "e1"), ("changed", "e1"), ("legacy", None), ("unlisted-etag", "e1")],
        "uri string, etag string")
    listed = spark.createDataFrame(
        [("same", "e1"), ("changed", "e2"), ("legacy", "e2"), ("unlisted-etag", None),
         ("new", "e1")], "uri string, etag string")
    finished, todo = split_done(listed, done)
    assert sorted(row.uri for row in finished.collect()) == ["legacy", "same", "unlisted-etag"]
    assert sorted((row.uri, row.etag) for row in todo.collect()) == [("changed", "e2"),
                                                                      ("new", "e1")]
