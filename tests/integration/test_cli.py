"""The jobs' command lines, run as processes: --help, and bad input stopping with one clear
line and exit code 2 before Spark work starts."""
import os
import subprocess
import sys

import pytest

import services
from conftest import BUCKET, MODEL_URI

JOBS = services.ROOT / "jobs"


def run_job(job: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(JOBS / job), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300,
                          cwd=services.ROOT)


@pytest.mark.parametrize("job, options", [
    ("infer.py", ["--input", "--manifest", "--inventory", "--model", "--output",
                  "--gremlin-endpoint", "--no-graph", "--glob", "--modified-after",
                  "--modified-before", "--max-object-bytes", "--shard", "--resume",
                  "--max-failed-fraction", "--progress-interval", "--max-concurrent-writers",
                  "--max-upserts-per-second", "--top-k", "--batch-size", "--partitions",
                  "--config", "--set", "--log-level"]),
    ("train.py", ["--input", "--output", "--epochs", "--model-name", "--model-version",
                  "--config", "--set", "--log-level"]),
])
def test_help_documents_every_option(job, options):
    result = run_job(job, "--help")
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout


def test_invalid_config_value_stops_before_spark():
    result = run_job("infer.py", "--config", "conf/local.yaml", "--input", "s3a://b/in/",
                     "--model", "s3a://b/m", "--output", "s3a://b/out",
                     "--set", "graph.records_per_request=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "infer.py: error: conf/local.yaml: graph.records_per_request must be greater than 0, got 0")


def test_unreachable_gremlin_endpoint(endpoints, tmp_path):
    closed_port = services.free_port()
    result = run_job("infer.py", "--config", "conf/local.yaml", "--input",
                     f"s3a://{BUCKET}/incoming/", "--model", MODEL_URI, "--output",
                     f"s3a://{BUCKET}/cli-out", "--gremlin-endpoint",
                     f"ws://127.0.0.1:{closed_port}/gremlin", env=endpoints.env())
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"infer.py: error: cannot reach the Gremlin endpoint "
                           f"ws://127.0.0.1:{closed_port}/gremlin: ")


def test_too_many_dead_letters_exit_3_with_the_report_written(endpoints, dataset, trained_model,
                                                              s3):
    result = run_job("infer.py", "--config", "conf/local.yaml", "--input",
                     f"s3a://{BUCKET}/incoming/corrupt/", "--model", MODEL_URI, "--output",
                     f"s3a://{BUCKET}/cli-threshold", "--no-graph", "--max-failed-fraction", "0.5",
                     env=endpoints.env())
    assert result.returncode == 3, result.stderr
    assert "reconciled           yes: listed 1 = written 0 + dead-lettered 1 + skipped 0" \
        in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "infer.py: 100.0% of the objects processed were dead-lettered, over the limit of 50.0% "
        "(run.max_failed_fraction)")
    reports = s3.list_objects_v2(Bucket=BUCKET, Prefix="cli-threshold/_reports/")["Contents"]
    assert len(reports) == 1 and reports[0]["Key"].endswith(".json")
