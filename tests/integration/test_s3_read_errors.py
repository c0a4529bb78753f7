"""How S3's answers to the workers' object reads end, in whole runs against moto's server: the
fault proxy (dev/s3_fault_proxy.py) answers chosen objects with 404 NoSuchKey, 403 AccessDenied
or 503 SlowDown on every try, the rest pass through. Each ends as its documented dead letter
(stage `read`; not found and access denied final, a 5xx that outlasts `s3.max_attempts`
retryable), and a `--resume` run, once S3 answers, reads again exactly the retryable one and the
objects no earlier run of this model finished: a dead letter of another model does not count."""
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

from imagegraph.graph.connection import remote_traversal
from imagegraph.infer.job import run_inference
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR, write_dead_letters
from imagegraph.storage.selection import PREFIX, InputSource

BUCKET = "imagegraph-read-errors"
OUTPUT = f"s3a://{BUCKET}/results"
MODEL_TAG = "digits@v1"
MAX_ATTEMPTS = 2  # s3.max_attempts: tries of each read, so the 503 object is tried twice


@pytest.fixture(scope="module")
def digits() -> dict[str, bytes]:
    """{'<digit>/<n>.png': bytes}: 9 real digits."""
    _, held_out = sample_images.digit_images(limit=60)
    return dict(sorted(held_out.items())[:9])


def dead_letters(spark, run_id: str) -> set[tuple]:
    return {(r["uri"], r["stage"], r["reason"], r["retryable"], r["model"]) for r in
            spark.read.parquet(f"{OUTPUT}/{DEAD_LETTER_DIR}").where(f"run_id = '{run_id}'")
            .collect()}


def predicted(spark, run_id: str) -> set[str]:
    return {r["uri"] for r in spark.read.parquet(f"{OUTPUT}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{run_id}'").select("uri").collect()}


def test_404_403_and_503_beyond_retries_then_resume(spark, config, trained_model, s3, digits):
    keys = sorted(digits)
    late = keys.pop()  # put after the first run, dead-lettered before by another model only
    put_objects(s3, BUCKET, "in/", {key: digits[key] for key in keys})
    uri = {key: f"s3://{BUCKET}/in/{key}" for key in digits}
    missing, denied, slow = keys[0], keys[1], keys[2]
    statuses = {f"/{BUCKET}/in/{missing}": 404, f"/{BUCKET}/in/{denied}": 403,
                f"/{BUCKET}/in/{slow}": 503}
    with remote_traversal(config.graph) as g:
        g.V().drop().iterate()

    with S3FaultProxy(config.s3.endpoint, key_statuses=statuses) as proxy:
        reading = replace(config, s3=replace(config.s3, endpoint=proxy.endpoint,
                                             max_attempts=MAX_ATTEMPTS))
        first = run_inference(spark, reading, InputSource(PREFIX, f"s3a://{BUCKET}/in/"),
                              MODEL_URI, OUTPUT)
        assert first.reconciles(), first.disagreements()
        assert (first.listed, first.classified, first.graph_written) == (8, 5, 5)
        assert first.dead_lettered_by_reason == {
            "object not found": 1, "access denied": 1, "read failed: SlowDown": 1}
        assert dead_letters(spark, first.run_id) == {
            (uri[missing], "read", "object not found", False, MODEL_TAG),
            (uri[denied], "read", "access denied", False, MODEL_TAG),
            (uri[slow], "read", "read failed: SlowDown", True, MODEL_TAG)}
        assert predicted(spark, first.run_id) == {uri[k] for k in keys[3:]}
        # 404 and 403 are not retried; the 503 is, up to s3.max_attempts tries
        assert {path: proxy.gets[path] for path in statuses} == {
            f"/{BUCKET}/in/{missing}": 1, f"/{BUCKET}/in/{denied}": 1,
            f"/{BUCKET}/in/{slow}": MAX_ATTEMPTS}
        assert proxy.injected == {404: 1, 403: 1, 503: MAX_ATTEMPTS}

        # S3 answers again (for every object: a final dead letter read again would now be
        # classified); a new object carries a final dead letter of another model only
        proxy.key_statuses = {}
        put_objects(s3, BUCKET, "in/", {late: digits[late]})
        other = spark.createDataFrame(
            [(uri[late], None, "read", "access denied", False, 1, "other@1", "seeded")],
            "uri string, etag string, stage string, reason string, retryable boolean, "
            "bytes long, model string, run_id string")
        write_dead_letters(other, OUTPUT, "seeded", datetime.now(timezone.utc))
        proxy.gets.clear()
        resumed = run_inference(spark, reading, InputSource(PREFIX, f"s3a://{BUCKET}/in/"),
                                MODEL_URI, OUTPUT, resume=True)

    assert resumed.reconciles(), resumed.disagreements()
    assert (resumed.listed, resumed.skipped_done, resumed.classified, resumed.dead_lettered) \
        == (9, 7, 2, 0)
    assert predicted(spark, resumed.run_id) == {uri[slow], uri[late]}
    assert {path for path in proxy.gets if path.startswith(f"/{BUCKET}/in/")} == {
        f"/{BUCKET}/in/{slow}", f"/{BUCKET}/in/{late}"}
    with remote_traversal(config.graph) as g:
        images = {i["id"]: i["runs"] for i in g.V().has_label("image").project("id", "runs")
                  .by(T.id).by(__.out_e("classified_as").values("run_id").dedup().fold())
                  .to_list()}
    assert images == {**{uri[k]: [first.run_id] for k in keys[3:]},
                      uri[slow]: [resumed.run_id], uri[late]: [resumed.run_id]}
