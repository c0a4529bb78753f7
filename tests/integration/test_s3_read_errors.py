"""How S3's answers to the workers' object reads end, in whole runs against moto's server: the
fault proxy (dev/s3_fault_proxy.py) answers chosen objects with 404 NoSuchKey, 403 AccessDenied,
403 InvalidObjectState (archived) or 503 SlowDown on every try, the rest pass through. Each ends
as its documented dead letter (stage `read`; not found, access denied and archived refused, a
5xx that outlasts `s3.max_attempts` transient), and `--resume` runs read again the objects no
earlier run of this model finished, until their dead letters reach `inference.max_attempts`:
a dead letter of another model does not count. A run without `--resume` reads them all again."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest
import sample_images
from conftest import MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from s3_fault_proxy import S3FaultProxy
from s3_objects import put_objects

from imagegraph.dead_letters import REFUSED, TRANSIENT
from imagegraph.graph.connection import remote_traversal
from imagegraph.infer.job import run_inference
from imagegraph.storage.object_reader import ARCHIVED
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR, write_dead_letters
from imagegraph.storage.selection import PREFIX, InputSource

BUCKET = "imagegraph-read-errors"
OUTPUT = f"s3a://{BUCKET}/results"
MODEL_TAG = "digits@v1"
MAX_ATTEMPTS = 2  # s3.max_attempts: tries of each read, so the 503 object is tried twice
RUNS_PER_OBJECT = 2  # inference.max_attempts: runs that may dead-letter an object not final


@pytest.fixture(scope="module")
def digits() -> dict[str, bytes]:
    """{'<digit>/<n>.png': bytes}: 9 real digits."""
    _, held_out = sample_images.digit_images(limit=60)
    return dict(sorted(held_out.items())[:9])


def dead_letters(spark, run_id: str) -> set[tuple]:
    return {(r["uri"], r["stage"], r["reason"], r["retry_class"], r["attempt"], r["model"])
            for r in spark.read.parquet(f"{OUTPUT}/{DEAD_LETTER_DIR}")
            .where(f"run_id = '{run_id}'").collect()}


def predicted(spark, run_id: str) -> set[str]:
    return {r["uri"] for r in spark.read.parquet(f"{OUTPUT}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{run_id}'").select("uri").collect()}


def test_404_403_archived_and_503_then_resume_until_out_of_attempts(
        spark, config, trained_model, s3, digits):
    keys = sorted(digits)
    late = keys.pop()  # put after the first run, dead-lettered before by another model only
    put_objects(s3, BUCKET, "in/", {key: digits[key] for key in keys})
    uri = {key: f"s3://{BUCKET}/in/{key}" for key in digits}
    path = {key: f"/{BUCKET}/in/{key}" for key in digits}
    missing, denied, archived, slow = keys[:4]
    refused = {missing: "object not found", denied: "access denied", archived: ARCHIVED}
    faults = {path[missing]: 404, path[denied]: 403, path[archived]: "InvalidObjectState",
              path[slow]: 503}
    with remote_traversal(config.graph) as g:
        g.V().drop().iterate()

    with S3FaultProxy(config.s3.endpoint, key_statuses=faults) as proxy:
        reading = replace(config, s3=replace(config.s3, endpoint=proxy.endpoint,
                                             max_attempts=MAX_ATTEMPTS),
                          inference=replace(config.inference, max_attempts=RUNS_PER_OBJECT))
        source = InputSource(PREFIX, f"s3a://{BUCKET}/in/")
        first = run_inference(spark, reading, source, MODEL_URI, OUTPUT)
        assert first.reconciles(), first.disagreements()
        assert (first.listed, first.classified, first.graph_written) == (8, 4, 4)
        assert first.dead_lettered_by_reason == {
            "object not found": 1, "access denied": 1, ARCHIVED: 1, "read failed: SlowDown": 1}
        assert dead_letters(spark, first.run_id) == {
            *((uri[k], "read", reason, REFUSED, 1, MODEL_TAG) for k, reason in refused.items()),
            (uri[slow], "read", "read failed: SlowDown", TRANSIENT, 1, MODEL_TAG)}
        assert predicted(spark, first.run_id) == {uri[k] for k in keys[4:]}
        # refusals are not retried within a run; the 503 is, up to s3.max_attempts tries
        assert {p: proxy.gets[p] for p in faults} == {
            path[missing]: 1, path[denied]: 1, path[archived]: 1, path[slow]: MAX_ATTEMPTS}
        assert proxy.injected == {404: 1, 403: 1, "InvalidObjectState": 1, 503: MAX_ATTEMPTS}

        # S3 answers the 503 object again, still refuses the three; a new object carries a
        # dead letter of another model only
        proxy.key_statuses = {p: fault for p, fault in faults.items() if fault != 503}
        put_objects(s3, BUCKET, "in/", {late: digits[late]})
        other = spark.createDataFrame(
            [(uri[late], None, None, "read", "not an image: text", 1, 1, "other@1", "seeded")],
            "uri string, etag string, version_id string, stage string, reason string, "
            "attempt int, bytes long, model string, run_id string")
        write_dead_letters(other, OUTPUT, "seeded", datetime.now(timezone.utc))
        proxy.gets.clear()
        second = run_inference(spark, reading, source, MODEL_URI, OUTPUT, resume=True)
        assert second.reconciles(), second.disagreements()
        assert (second.listed, second.skipped_done, second.skipped_out_of_attempts,
                second.classified, second.dead_lettered) == (9, 4, 0, 2, 3)
        assert predicted(spark, second.run_id) == {uri[slow], uri[late]}
        assert dead_letters(spark, second.run_id) == {
            (uri[k], "read", reason, REFUSED, 2, MODEL_TAG) for k, reason in refused.items()}
        assert {p: n for p, n in proxy.gets.items() if p.startswith(f"/{BUCKET}/in/")} == {
            path[k]: 1 for k in (missing, denied, archived, slow, late)}

        # S3 answers every object now, but the three are out of attempts: skipped, unread
        proxy.key_statuses = {}
        proxy.gets.clear()
        third = run_inference(spark, reading, source, MODEL_URI, OUTPUT, resume=True)

    assert third.reconciles(), third.disagreements()
    assert (third.listed, third.skipped_done, third.skipped_out_of_attempts, third.classified,
            third.committed_dead_letters) == (9, 9, 3, 0, 0)
    assert [p for p in proxy.gets if p.startswith(f"/{BUCKET}/in/")] == []
    attempts = {}
    for row in spark.read.parquet(f"{OUTPUT}/{DEAD_LETTER_DIR}").where(
            f"model = '{MODEL_TAG}'").collect():
        attempts.setdefault(row["uri"], []).append(row["attempt"])
    assert {u: sorted(a) for u, a in attempts.items()} == {
        **{uri[k]: [1, 2] for k in refused}, uri[slow]: [1]}
    with remote_traversal(config.graph) as g:
        images = {i["id"]: i["runs"] for i in g.V().has_label("image").project("id", "runs")
                  .by(T.id).by(__.out_e("classified_as").values("run_id").dedup().fold())
                  .to_list()}
    assert images == {**{uri[k]: [first.run_id] for k in keys[4:]},
                      uri[slow]: [second.run_id], uri[late]: [second.run_id]}

    # without --resume a run does every object listed, those out of attempts too (a fresh run
    # is the operator's way to retry everything once the cause is fixed)
    fourth = run_inference(spark, replace(config, inference=replace(
        config.inference, max_attempts=RUNS_PER_OBJECT)), source, MODEL_URI, OUTPUT)
    assert fourth.reconciles(), fourth.disagreements()
    assert (fourth.listed, fourth.skipped_done, fourth.skipped_out_of_attempts,
            fourth.classified, fourth.committed_dead_letters) == (9, 0, 0, 9, 0)
    assert predicted(spark, fourth.run_id) == set(uri.values())
