"""`python -m imagegraph.runs.status` over a real sharded backfill in the local S3: shard 0 of 3
finished by a real run, shard 1 held by a live lease as a running run holds it, shard 2 never
started; the status command reads only the reports and leases under the output, and draws them
with --picture."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sample_images
from conftest import BUCKET, LOCAL_YAML, MODEL_URI
from PIL import Image
from s3_objects import put_objects

from imagegraph.infer.job import run_inference
from imagegraph.runs.lease import take_lease
from imagegraph.runs.status import DONE, RUNNING, RunSpan, backfill_timeline, read_runs
from imagegraph.storage.selection import PREFIX, InputSource, Shard, shard_of

OUT = f"s3a://{BUCKET}/status-out"


@pytest.fixture(scope="module")
def backfill(spark, config, trained_model, s3, endpoints):
    """Shard 0/3 classified (graph off), shard 1/3 leased by a 'running' run; yields
    (the shard 0 report, the running run id, the environment for the command)."""
    digits, _ = sample_images.digit_images(limit=24)
    put_objects(s3, BUCKET, "status/", digits)
    run_config = replace(config, graph=replace(config.graph, enabled=False))
    report = run_inference(spark, run_config, InputSource(PREFIX, f"s3a://{BUCKET}/status/"),
                           MODEL_URI, OUT, Shard(0, 3))
    with take_lease(OUT, trained_model.metadata.tag, Shard(1, 3), "20261206T000000Z-running", 600.0,
                    config.s3):
        yield report, digits, {**os.environ, **endpoints.env()}


def status(env, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagegraph.runs.status", "--output", OUT,
                           "--config", LOCAL_YAML, *options],
                          capture_output=True, text=True, env=env, timeout=120)


def test_status_says_done_running_and_not_started_with_the_counts(backfill, trained_model):
    report, digits, env = backfill
    in_shard = sum(1 for key in digits if shard_of(f"s3://{BUCKET}/status/{key}", 3) == 0)
    assert report.listed == in_shard and report.reconciles()
    done = status(env, "--json", "--model", trained_model.metadata.tag)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    shards = {s["shard"]: s for s in data["shards"]}
    assert sorted(shards) == ["0-of-3", "1-of-3", "2-of-3"]
    assert (shards["0-of-3"]["state"], shards["0-of-3"]["run_id"], shards["0-of-3"]["listed"],
            shards["0-of-3"]["written"], shards["0-of-3"]["left"]) == (
        "done", report.run_id, in_shard, report.committed_predictions, 0)
    assert (shards["1-of-3"]["state"], shards["1-of-3"]["run_id"]) == (
        "running", "20261206T000000Z-running")
    assert shards["2-of-3"]["state"] == "not started"
    table = status(env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[-1].startswith(
        f"total: 3 shard(s): 1 done, 1 running, 0 failed, 1 not started; written "
        f"{report.committed_predictions}, ")


def test_status_of_an_output_without_runs_is_one_line_and_exit_2(backfill):
    _, _, env = backfill
    done = subprocess.run([sys.executable, "-m", "imagegraph.runs.status", "--output",
                           f"s3a://{BUCKET}/nothing-here", "--config", LOCAL_YAML],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: s3a://{BUCKET}/nothing-here: no run report or "
                                   f"lease under it; is this a job's --output?")


def test_status_draws_the_backfill_from_what_its_runs_wrote(backfill, trained_model, config,
                                                           tmp_path):
    report, _, env = backfill
    model = trained_model.metadata.tag
    drawn = status(env, "--picture", str(tmp_path / "backfill.png"))
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.splitlines()[-1].startswith("total: 3 shard(s): 1 done, 1 running, ")
    assert Image.open(tmp_path / "backfill.png").size == (1200, 800)

    reports, leases = read_runs(OUT, model, config.s3)
    now = datetime.now(timezone.utc)
    timeline = backfill_timeline(reports, leases, now)
    started = datetime.fromisoformat(report.started_at)
    lease_started = datetime.fromisoformat(leases[(model, "1-of-3")].body["started_at"])
    assert timeline.rows == [(model, "0-of-3"), (model, "1-of-3"), (model, "2-of-3")]
    assert timeline.spans == [
        RunSpan(model, "0-of-3", report.run_id, DONE, started,
                started + timedelta(seconds=report.elapsed_s)),
        RunSpan(model, "1-of-3", "20261206T000000Z-running", RUNNING, lease_started, now)]
    committed = [datetime.fromisoformat(c["committed_at"]) for c in report.chunk_figures]
    assert [when for when, _ in timeline.finished] == [started] + committed
    assert started < committed[0] and committed[-1] < timeline.spans[0].end
    assert [objects for _, objects in timeline.finished][-1] == report.listed  # all committed
    assert len(timeline.finished) == report.chunks + 1
    assert (timeline.listed, timeline.unlisted_shards, timeline.estimated_end) == (
        report.listed, 2, None)  # shards 1 and 2 not listed yet: no end to estimate
