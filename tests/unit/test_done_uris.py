"""What `--resume` takes as done: predictions by model and by the graph endpoint they were
written to (`outputs.finished_uris`), and objects out of attempts (`outputs.with_attempts`,
`outputs.split_out_of_attempts`), against Parquet written as the job writes it."""
from __future__ import annotations

from datetime import datetime, timezone

from imagegraph.dead_letters import FINAL, REFUSED, TRANSIENT
from imagegraph.storage.outputs import (
    DEAD_LETTER_DIR,
    PREDICTIONS_DIR,
    finished_uris,
    split_done,
    split_out_of_attempts,
    with_attempts,
    write_dead_letters,
    write_predictions,
)

A, B = "ws://a:8182/gremlin", "wss://b:8182/gremlin"


def test_predictions_are_finished_for_their_own_graph_endpoint(spark, tmp_path):
    """`off` was committed with the graph off, `to-a` to endpoint A, `legacy` before endpoints
    were recorded (no column), `other-model` by another model; `final` and `retry` are dead
    letters, never finished (see the attempts below). Each endpoint's run takes as finished its
    own predictions; a graph-off run, every prediction of its model."""
    output = f"file://{tmp_path}/out"
    rows = "uri string, model string, run_id string"
    write_predictions(spark.createDataFrame([("off", "m@1", "r1")], rows), output, "r1", "")
    write_predictions(spark.createDataFrame([("to-a", "m@1", "r2"), ("other-model", "n@1", "r2")],
                                            rows), output, "r2", A)
    spark.createDataFrame([("legacy", "m@1")], "uri string, model string") \
        .write.parquet(f"{output}/{PREDICTIONS_DIR}/run_id=r0")
    write_dead_letters(spark.createDataFrame(
        [("final", "e1", "v1", "decode", "not an image: text", 1, 4, "m@1", "r3"),
         ("retry", "e1", None, "read", "read failed: SlowDown", 1, 4, "m@1", "r3")],
        DEAD_LETTER_ROW), output, "r3", datetime.now(timezone.utc))

    def done(endpoint: str) -> list[str]:
        return sorted(row.uri for row in finished_uris(spark, output, "m@1", endpoint).collect())

    assert done(A) == ["to-a"]
    assert done(B) == []
    assert done("") == ["legacy", "off", "to-a"]


DEAD_LETTER_ROW = ("uri string, etag string, version_id string, stage string, reason string, "
                   "attempt int, bytes long, model string, run_id string")


def test_attempts_are_counted_by_version_and_model_and_capped_by_the_latest_class(
        spark, tmp_path):
    """Dead letters of earlier runs, as the job writes them (`retry_class` from the reason)
    and as it wrote them before attempts were counted (`retryable`, no `retry_class`):
    `denied` twice and `slow` 3 times, then out of 3 attempts; `decoded` once, final; `moved`
    refused then transient, the latest counting; `changed` dead-lettered in another version;
    `legacy` once with the old columns (`access denied` not retryable then, refused now);
    `other` by another model only; `new` never. An object is out of attempts when its count
    reached its latest class's cap."""
    output = f"file://{tmp_path}/out"
    runs = [
        [("denied", "e1", "read", "access denied"), ("slow", "e1", "read", "read failed: x"),
         ("decoded", "e1", "decode", "not an image: text"),
         ("moved", "e1", "read", "object not found"), ("changed", "e0", "read", "access denied"),
         ("other", "e1", "read", "access denied", "n@1")],
        [("denied", "e1", "read", "access denied"), ("slow", "e1", "read", "read failed: x"),
         ("moved", "e1", "read", "read failed: SlowDown")],
        [("slow", "e1", "read", "read failed: x")],
    ]
    for number, rows in enumerate(runs, start=1):
        write_dead_letters(spark.createDataFrame(
            [(uri, etag, None, stage, reason, number, 4, model[0] if model else "m@1",
              f"r{number}")
             for uri, etag, stage, reason, *model in rows], DEAD_LETTER_ROW),
            output, f"r{number}", datetime(2026, 1, number, tzinfo=timezone.utc))
    spark.createDataFrame(
        [("legacy", "e1", "read", "access denied", False, 4, "m@1",
          datetime(2025, 1, 1, tzinfo=timezone.utc))],
        "uri string, etag string, stage string, reason string, retryable boolean, bytes long, "
        "model string, recorded_at timestamp").write.parquet(
        f"{output}/{DEAD_LETTER_DIR}/run_id=r0")
    listed = spark.createDataFrame(
        [(uri, "e1", 4) for uri in
         ("denied", "slow", "decoded", "moved", "changed", "legacy", "other", "new")],
        "uri string, etag string, size long")

    counted = with_attempts(spark, output, "m@1", listed)
    assert counted.columns == ["uri", "etag", "size", "attempts_before", "latest_class"]
    assert sorted((r.uri, r.attempts_before, r.latest_class) for r in counted.collect()) == [
        ("changed", 0, None), ("decoded", 1, FINAL), ("denied", 2, REFUSED),
        ("legacy", 1, REFUSED), ("moved", 2, TRANSIENT), ("new", 0, None),
        ("other", 0, None), ("slow", 3, TRANSIENT)]
    out, todo = split_out_of_attempts(counted, 3)
    assert sorted(r.uri for r in out.collect()) == ["decoded", "slow"]
    assert sorted(r.uri for r in todo.collect()) == [
        "changed", "denied", "legacy", "moved", "new", "other"]
    out, _ = split_out_of_attempts(counted, 2)
    assert sorted(r.uri for r in out.collect()) == ["decoded", "denied", "moved", "slow"]
    written = spark.read.option("mergeSchema", True).parquet(
        f"{output}/{DEAD_LETTER_DIR}").where("run_id = 'r2'")
    assert sorted((r.uri, r.retry_class, r.attempt) for r in written.collect()) == [
        ("denied", REFUSED, 2), ("moved", TRANSIENT, 2), ("slow", TRANSIENT, 2)]


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
