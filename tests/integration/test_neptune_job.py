"""jobs/infer.py against an endpoint that fails the way Neptune does (dev/neptune_errors_server.py):
a refused handshake, a reader endpoint, an engine without mergeV, credentials that stop working
mid-run. Each run ends with exit code 2 and one line naming the cause, hangs nowhere, and commits
nothing for the chunk it was writing (`--resume` does it again)."""
from __future__ import annotations

import pytest
from conftest import BUCKET, MODEL_URI
from neptune_errors_server import Answers, NeptuneErrorsServer
from test_cli import _cli_input, assert_one_error_line, run_infer


@pytest.mark.parametrize("answers, fragment", [
    (Answers(handshake_status=403), "permission denied (HTTP 403"),
    (Answers(handshake_status=401), "permission denied (HTTP 401"),
    (Answers(error_code="ReadOnlyViolationException"),
     "point graph.endpoint at the cluster (writer) endpoint"),
    (Answers(error_code="MalformedQueryException", gremlin_status=499,
             detailed_message="Unsupported step: mergeV", reject_containing="mergeV"),
     "upgrade Neptune to engine 1.3.2.0 or later, or set graph.upsert_style=coalesce"),
], ids=["handshake 403", "handshake 401", "reader endpoint", "no mergeV"])
def test_startup_probe_stops_the_job(answers, fragment, endpoints, trained_model, s3, tmp_path):
    output = f"cli-out/probe-{tmp_path.name}"
    with NeptuneErrorsServer(answers) as server:
        result, _ = run_infer(
            tmp_path, "--config", "conf/local.yaml", "--input", _cli_input(s3), "--model",
            MODEL_URI, "--output", f"s3a://{BUCKET}/{output}", "--gremlin-endpoint",
            server.endpoint, "--set", "graph.max_attempts=3", "--set",
            "graph.failover_budget_s=3", env=endpoints.env())
    assert_one_error_line(result, f"graph writes to {server.endpoint} ", fragment)
    # the probe's tries (3 attempts, or a read-only endpoint's reconnects within the 3 s
    # failover budget), then nothing: no full-speed run against a refusing endpoint
    assert server.requests <= 8
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=output)["KeyCount"] == 0


def test_credentials_that_stop_working_mid_run_stop_the_job(endpoints, trained_model, s3,
                                                            tmp_path):
    """The driver's startup probe is let in; every writer's handshake after it is refused with
    403. The job exits 2 with one line instead of hanging (it used to wait forever on the
    failed connection's pool), and commits nothing."""
    output = f"cli-out/midrun-{tmp_path.name}"
    with NeptuneErrorsServer(Answers(handshake_status=403, handshakes_accepted=1)) as server:
        result, _ = run_infer(
            tmp_path, "--config", "conf/local.yaml", "--input", _cli_input(s3), "--model",
            MODEL_URI, "--output", f"s3a://{BUCKET}/{output}", "--gremlin-endpoint",
            server.endpoint, env=endpoints.env())
    # in local mode the executors' log lines share the job's stderr: the error is its last line
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("infer.py: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"infer.py: error: graph writes to {server.endpoint} stopped: "
                                "permission denied (HTTP 403")
    assert server.handshakes > 1  # the workers reached it
    keys = [o["Key"] for o in
            s3.list_objects_v2(Bucket=BUCKET, Prefix=output).get("Contents", [])]
    assert not [key for key in keys if "/predictions/" in key or "/dead_letter/" in key], keys
