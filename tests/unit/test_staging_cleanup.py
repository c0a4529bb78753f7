"""An inference run's staging area (`<output>/_staging/<run_id>/`) is removed when the run
fails, and a run removes those of earlier runs that no lease names; on file:// with a run that
fails at its first staged step (a manifest row naming no object), so no model is loaded. A link
run's (`_staging/link-<id>/`) is removed when its graph writes are refused."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import replace

import pytest
from neptune_errors_server import Answers, NeptuneErrorsServer

from imagegraph.config import Config
from imagegraph.errors import JobError
from imagegraph.infer.job import run_inference
from imagegraph.link.job import PREDICTION_COLUMNS, run_link
from imagegraph.model.artifact import LABELS_FILE, METADATA_FILE, MODEL_FILE, ModelMetadata
from imagegraph.runs.lease import LEASES_DIR, take_lease
from imagegraph.storage.outputs import REPORTS_DIR, write_predictions
from imagegraph.storage.selection import MANIFEST, InputSource

METADATA = ModelMetadata(name="brightness", version="1", input_height=4, input_width=4,
                         channels=1, preprocessing="scale_0_1", classes=("dark", "bright"))
CONFIG = replace(Config(), graph=replace(Config().graph, enabled=False))
KILLED, LIVE, EXPIRED, ENDED = (f"20260101T00000{n}Z-00000{n}" for n in range(4))
LINK = "link-20260101T000009Z-000009"


@pytest.fixture
def failing_run(spark, tmp_path):
    """`run()`: an inference run under tmp_path/out, of a model artifact that is never loaded
    (its model file is not one) and a manifest whose second row names no object, which stops
    the run with `JobError` once it has staged its selection. Returns the output directory."""
    model = tmp_path / "model"
    model.mkdir()
    (model / METADATA_FILE).write_text(METADATA.to_json())
    (model / LABELS_FILE).write_text(json.dumps(list(METADATA.classes)))
    (model / MODEL_FILE).write_bytes(b"never loaded")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri,size\n{(tmp_path / 'a.png').as_uri()},10\n,10\n")
    output = tmp_path / "out"

    def run():
        with pytest.raises(JobError, match=r"1 row\(s\) name no object"):
            run_inference(spark, CONFIG, InputSource(MANIFEST, manifest.as_uri()),
                          model.as_uri(), output.as_uri())
        return output

    return run


def test_a_failed_run_removes_its_staging_area(failing_run):
    output = failing_run()
    assert os.listdir(output / "_staging") == []
    assert os.listdir(output / LEASES_DIR / "brightness@1") == [".lock"]  # released


def test_a_run_removes_the_staging_areas_of_runs_no_lease_names(failing_run, tmp_path,
                                                                caplog):
    """KILLED holds no lease; LIVE holds one of another model; EXPIRED's lease, of another
    model, expired but still names it (its holder may yet renew it); ENDED's expired lease of
    a shard overlapping the run's is ended by the run as it takes its own; LINK is a link
    run's (no lease tells whether it still runs)."""
    output = tmp_path / "out"
    for run_id in (KILLED, LIVE, EXPIRED, ENDED, LINK):
        (output / "_staging" / run_id / "selected").mkdir(parents=True)
        (output / "_staging" / run_id / "selected" / "part-0.parquet").write_bytes(b"x")
    for run_id, lease in ((EXPIRED, "old@1/all.json"), (ENDED, "brightness@1/0-of-2.json")):
        path = output / LEASES_DIR / lease
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run_id": run_id, "ttl_s": 1}))
        os.utime(path, (time.time() - 60,) * 2)
    caplog.set_level(logging.INFO, logger="imagegraph.infer.job")
    with take_lease(output.as_uri(), "other@1", None, LIVE, 300, CONFIG.s3):
        failing_run()
    assert sorted(os.listdir(output / "_staging")) == sorted([LIVE, EXPIRED, LINK])
    removals = [record.getMessage() for record in caplog.records
                if "staging areas of" in record.getMessage()]
    assert len(removals) == 1 and re.fullmatch(
        r"run \S+: " + re.escape(f"removed the staging areas of 2 earlier run(s) that no lease "
                                 f"names under {output.as_uri()}/_staging: {KILLED}, {ENDED}"),
        removals[0]), removals


def test_a_failed_link_run_removes_its_staging_area(spark, tmp_path):
    """A link run of one finished run (it has a report) whose graph writes are refused (every
    handshake answered 403 AccessDeniedException, `dev/neptune_errors_server.py`) has staged
    its copies by then; it stops with the writers' one permission line, as the writers would,
    and its `_staging/link-<id>/` is removed (`run_link`'s `finally`)."""
    output = tmp_path / "out"
    rows = spark.createDataFrame([(f"s3://b/{n}.png", f"{n:064x}", n, [], "m@1", "r1")
                                  for n in range(3)], PREDICTION_COLUMNS)
    write_predictions(rows.drop("run_id"), output.as_uri(), "r1", "")
    (output / REPORTS_DIR).mkdir()
    (output / REPORTS_DIR / "r1.json").write_text("{}")
    with NeptuneErrorsServer(Answers(handshake_status=403)) as server:
        graph = replace(Config().graph, endpoint=server.endpoint, failover_budget_s=1.0,
                        connect_timeout_s=1.0)
        with pytest.raises(JobError) as stopped:
            run_link(spark, replace(Config(), graph=graph), output.as_uri(), "m@1")
    line = str(stopped.value)
    assert line.startswith(f"the link job's graph write failed: graph writes to "
                           f"{server.endpoint} stopped: permission denied (HTTP 403 "), line
    assert "\n" not in line and "check the IAM policy" in line
    assert os.listdir(output / "_staging") == []
    assert not (output / "_linked").exists()  # nothing marked linked
