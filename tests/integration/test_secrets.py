"""No credential in any log, output or report: jobs/infer.py through spark-submit with
recognisable fake AWS credentials (S3 through s3a, and IAM-signed Gremlin handshakes), job
logging at DEBUG and Spark's at INFO with its configuration logged; then every byte it printed,
Spark's event log and every object under the output location are searched for them."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import sample_images
import services
from conftest import BUCKET, MODEL_URI
from handshake_recorder import HandshakeRecorder
from s3_objects import put_objects

ACCESS_KEY = "AKIALEAKCHECK7700001"
SECRET_KEY = "LeakCheckSecret0123456789abcdefghijKLMNO"
SESSION_TOKEN = "LeakCheckSessionToken" + "0123456789abcdef" * 8
CREDENTIALS = {"access key id": ACCESS_KEY, "secret access key": SECRET_KEY,
               "session token": SESSION_TOKEN}
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
PREFIX = "secrets/"


def leaks(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(where, which credential) for every credential found in `texts` ({where: text})."""
    return [(where, name) for where, text in texts.items()
            for name, value in CREDENTIALS.items() if value in text]


def output_texts(s3, prefix: str) -> dict[str, str]:
    """Every object under `prefix` as text; a Parquet file also as its decoded rows."""
    texts = {}
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    for entry in listing.get("Contents", []):
        data = s3.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
        texts[entry["Key"]] = data.decode("latin-1")
        if entry["Key"].endswith(".parquet"):
            texts[entry["Key"] + " (rows)"] = repr(pq.read_table(io.BytesIO(data)).to_pylist())
    assert not listing["IsTruncated"]
    return texts


@pytest.fixture(scope="module")
def submitted(endpoints, trained_model, s3, tmp_path_factory):
    """One spark-submit run of jobs/infer.py with the fake credentials in its environment:
    (the finished process, the handshake heads Gremlin Server got, {name: event log text})."""
    _, held_out = sample_images.digit_images(limit=30)
    put_objects(s3, BUCKET, f"{PREFIX}in/", held_out)
    events = tmp_path_factory.mktemp("spark-events")
    gremlin = urlsplit(endpoints.gremlin_endpoint)
    with HandshakeRecorder(gremlin.hostname, gremlin.port) as recorder:
        result = subprocess.run([
            str(SPARK_SUBMIT), "--master", "local[2]",
            "--conf", "spark.eventLog.enabled=true",
            "--conf", f"spark.eventLog.dir={events.as_uri()}", "--conf", "spark.logConf=true",
            str(services.ROOT / "jobs" / "infer.py"), "--config", "conf/local.yaml",
            "--input", f"s3a://{BUCKET}/{PREFIX}in/", "--model", MODEL_URI,
            "--output", f"s3a://{BUCKET}/{PREFIX}results",
            "--gremlin-endpoint", f"ws://127.0.0.1:{recorder.port}/gremlin",
            # quoted: YAML reads a bare on as true (see test_config's xfail on iam_auth)
            "--set", "graph.iam_auth=on", "--set", "graph.region=us-east-1",
            "--set", "spark.log_level=INFO", "--log-level", "DEBUG",
        ], capture_output=True, text=True, timeout=600, cwd=services.ROOT, env={
            **os.environ, **endpoints.env(), "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN})
    # spark-submit prints the Python driver's stderr (job log, errors) on its stdout
    assert result.returncode == 0, [line for line in result.stdout.splitlines()
                                    if "error" in line.lower()][-5:]
    assert "  reconciled           yes" in result.stdout
    event_logs = {f"event log {path.name}": path.read_text() for path in events.iterdir()}
    assert len(event_logs) == 1
    return result, [head.decode("latin-1") for head in recorder.heads], event_logs


def test_no_credential_in_logs_outputs_or_reports(submitted, s3):
    result, heads, event_logs = submitted
    # The credentials were in use: every Gremlin handshake (the driver's checks and model
    # writes, each partition's writer) was signed with them...
    assert len(heads) >= 3
    for head in heads:
        assert f"Credential={ACCESS_KEY}/" in head
        assert f"X-Amz-Security-Token: {SESSION_TOKEN}" in head
    # ...s3a had them in its configuration, which Spark logged redacted...
    assert '"spark.hadoop.fs.s3a.secret.key":"*********(redacted)"' in \
        next(iter(event_logs.values()))
    # ...and the job logged at DEBUG, Spark at INFO.
    assert " DEBUG " in result.stdout and " INFO SparkContext: " in result.stderr
    outputs = output_texts(s3, f"{PREFIX}results/")
    assert any(key.startswith(f"{PREFIX}results/predictions/") and key.endswith(".parquet")
               for key in outputs)

    assert leaks({"stdout": result.stdout, "stderr": result.stderr, **event_logs,
                  **outputs}) == []


def test_spark_submit_master_is_the_one_used(submitted):
    """get_spark used to build a SparkConf before attaching to spark-submit's JVM, so it read
    no master and forced local[*]: on EMR, `--master yarn` would have run on one node."""
    _, _, event_logs = submitted
    assert '"spark.master":"local[2]"' in next(iter(event_logs.values()))


# What TensorFlow and Keras print by themselves: the TensorFlow Lite conversion's export of the
# model (hundreds of `Captures:` lines a worker), start-up banners of TensorFlow's C++ runtime
# and of TensorFlow Lite's interpreter.
LIBRARY_NOISE = ("Captures:", "TensorSpec(", "Saved artifact at", "The following endpoints are",
                 "This TensorFlow binary is optimized", "oneDNN custom operations",
                 "Created TensorFlow Lite XNNPACK delegate", "absl::InitializeLog",
                 "cpu_feature_guard", "Estimated count of arithmetic ops")


def test_the_run_prints_its_progress_and_no_library_dumps(submitted):
    """Driver and executors alike (local mode's Python workers print through the same JVM):
    the job's own lines are there, TensorFlow's conversion dumps and banners are not."""
    result, _, _ = submitted
    printed = (result.stdout + result.stderr).splitlines()
    assert any("progress: " in line for line in printed)
    assert any(line.startswith("  reconciled           yes") for line in printed)
    assert [line for line in printed if any(noise in line for noise in LIBRARY_NOISE)] == []
