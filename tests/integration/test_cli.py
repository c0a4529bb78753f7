"""The jobs' command lines, run as processes: --help, and bad input stopping with one clear
line and exit code 2 before Spark work starts.

Whether Spark work started is read from Spark's event log, which the job under test writes
(no `SparkListenerJobStart` event: no Spark job ran); configuration errors stop it before Spark
starts at all (no event log)."""
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest
import sample_images
import services
from conftest import BUCKET, MODEL_URI
from s3_objects import put_objects

from imagegraph.errors import JobError
from imagegraph.infer.job import run_inference
from imagegraph.storage.selection import MANIFEST, PREFIX, InputSource

JOBS = services.ROOT / "jobs"
PYTHON_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (\S+): ", re.MULTILINE)
"""A line of Python's logging in the jobs' text format; group 1 the logger's name."""
QUIET_LOG4J = services.ROOT / "conf" / "log4j2.properties"


def run_job(job: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(JOBS / job), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300,
                          cwd=services.ROOT)


@pytest.mark.parametrize("job, options", [
    ("infer.py", ["--input", "--manifest", "--inventory", "--model", "--output",
                  "--gremlin-endpoint", "--no-graph", "--glob", "--modified-after",
                  "--modified-before", "--max-image-bytes", "--shard", "--resume",
                  "--max-failed-fraction", "--progress-interval", "--max-concurrent-writers",
                  "--max-upserts-per-s", "--top-k", "--batch-size", "--partitions",
                  "--graph-load",
                  "--config", "--set", "--log-level", "--log-format"]),
    ("train.py", ["--input", "--output", "--epochs", "--model-name", "--model-version",
                  "--base", "--weights", "--fine-tune-epochs", "--unfreeze-layers",
                  "--early-stopping-patience", "--workers", "--resume", "needs internet",
                  "--config", "--set", "--log-level", "--log-format"]),
    ("link.py", ["--output", "--model", "--gremlin-endpoint", "--relink", "--config", "--set",
                 "--log-level", "--log-format"]),
])
def test_help_documents_every_option(job, options):
    result = run_job(job, "--help")
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout


def run_infer(tmp_path, *args: str, env: dict | None = None
              ) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run infer.py with Spark's event log on; (the result, its event logs' text)."""
    events = tmp_path / "spark-events"
    events.mkdir()
    result = run_job("infer.py", *args, env={
        **(env or {}),
        "SPARK_LOCAL_IP": "127.0.0.1",  # no warning about the host name on stderr
        "PYSPARK_SUBMIT_ARGS": f"--conf spark.eventLog.enabled=true "
                               f"--conf spark.eventLog.dir={events.as_uri()} "
                               f"--driver-java-options -Dlog4j2.configurationFile={QUIET_LOG4J} "
                               "pyspark-shell"})
    return result, [path.read_text() for path in events.iterdir()]


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2 and stderr exactly one `infer.py: error: ...` line holding `fragments`."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("infer.py: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


ARGS = ["--config", "conf/local.yaml", "--input", "s3a://b/in/", "--model", "s3a://b/m",
        "--output", "s3a://b/out"]
KNOWN_GRAPH_KEYS = ("connect_timeout_s, connections_per_task, enabled, endpoint, "
                    "failover_budget_s, iam_auth, "
                    "instance_vcpus, load, loader_endpoint, loader_iam_role_arn, "
                    "loader_parallelism, loader_poll_interval_s, loader_timeout_s, "
                    "max_attempts, max_concurrent_writers, max_failures_in_a_row, "
                    "max_split_requests, max_steps_per_request, max_upserts_per_s, "
                    "records_per_request, region, request_timeout_s, retry_base_delay_s, "
                    "retry_max_delay_s, rows_per_flush, upsert_style")


@pytest.mark.parametrize("file_text, overrides, message", [
    (None, ["graph.records_per_request=0"],
     "command line: graph.records_per_request must be greater than 0, got 0"),
    (None, ["graph.batch_size=100"],
     f"command line: unknown key graph.batch_size (known in this section: {KNOWN_GRAPH_KEYS})"),
    (None, ["inference.top_k=three"],
     "command line: inference.top_k must be int, got str 'three'"),
    ("graph:\n  batchsize: 100\n", [],
     f"{{path}}: unknown key graph.batchsize (known in this section: {KNOWN_GRAPH_KEYS})"),
    ('graph:\n  enabled: "false"\n', [], "{path}: graph.enabled must be bool, got str 'false'"),
    ("s3:\n  throttle_retry_limit: 64\n", [],
     "{path}: s3.throttle_retry_limit must be between 0 and 20, got 64"),
    (None, ["graph.load=bulk", "graph.loader_iam_role_arn="],
     "graph.load=bulk needs graph.loader_iam_role_arn: the IAM role attached to the Neptune "
     "cluster that lets the loader read the staging prefix (docs/GRAPH.md \"Bulk load\")"),
    ("graph:\n  endpoint: ${IMAGEGRAPH_TEST_UNSET}\n", [],
     "{path}: graph.endpoint is ${{IMAGEGRAPH_TEST_UNSET}}, which is not set (export the "
     "variable, or give it a default in the file: ${{VAR:-default}})"),
], ids=["--set out of range", "--set unknown key", "--set wrong type", "file unknown key",
        "file wrong type", "file retry limit out of range", "bulk load without the loader role",
        "file names an unset variable"])
def test_configuration_errors_stop_before_spark_starts(tmp_path, file_text, overrides, message):
    args = list(ARGS)
    if file_text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(file_text)
        args[1] = str(path)
        message = message.format(path=path)
    for override in overrides:
        args += ["--set", override]
    result, event_logs = run_infer(tmp_path, *args)
    assert assert_one_error_line(result) == f"infer.py: error: {message}"
    assert event_logs == []  # Spark never started


def test_an_iam_endpoint_without_a_region_stops_before_spark_starts(tmp_path):
    """The region that signs Neptune's handshakes is resolved before Spark starts: without one,
    one line and no Spark application."""
    result, event_logs = run_infer(
        tmp_path, *ARGS, "--gremlin-endpoint", "wss://neptune.example:8182/gremlin",
        env={"AWS_DEFAULT_REGION": "", "AWS_REGION": "", "AWS_CONFIG_FILE": "/nonexistent"})
    assert assert_one_error_line(result) == (
        "infer.py: error: IAM authentication to Neptune needs a region: set graph.region or "
        "AWS_DEFAULT_REGION")
    assert event_logs == []


MISSING_BUCKET = "imagegraph-no-such-bucket"


def _cli_input(s3) -> str:
    """Two real digits under their own prefix; their URI."""
    _, held_out = sample_images.digit_images(limit=12)
    put_objects(s3, BUCKET, "cli-in/", dict(list(held_out.items())[:2]))
    return f"s3a://{BUCKET}/cli-in/"


@pytest.mark.parametrize("case", [
    "gremlin endpoint unreachable", "model missing", "model bucket missing",
    "input bucket missing", "s3 endpoint unreachable",
])
def test_bad_locations_stop_with_one_line_before_spark_work(case, endpoints, trained_model, s3,
                                                            tmp_path):
    closed_port = services.free_port()
    input_uri, model_uri = _cli_input(s3), MODEL_URI
    output_uri = f"s3a://{BUCKET}/cli-out/{tmp_path.name}"
    env = endpoints.env()
    extra: list[str] = []
    if case == "gremlin endpoint unreachable":
        extra = ["--gremlin-endpoint", f"ws://127.0.0.1:{closed_port}/gremlin"]
        fragments = [f"cannot reach the Gremlin endpoint ws://127.0.0.1:{closed_port}/gremlin: "]
    elif case == "model missing":
        model_uri = f"s3a://{BUCKET}/models/none"
        fragments = [f"model {model_uri} not found: missing model.keras, labels.json, "
                     "metadata.json"]
    elif case == "model bucket missing":
        model_uri = f"s3a://{MISSING_BUCKET}/models/digits/v1"
        fragments = [MISSING_BUCKET, "does not exist"]
    elif case == "input bucket missing":
        input_uri = f"s3a://{MISSING_BUCKET}/incoming/"
        fragments = [MISSING_BUCKET, "does not exist"]
    else:  # every S3 request refused, retried at most once by the SDK and once by s3a
        env["S3_ENDPOINT"] = f"http://127.0.0.1:{closed_port}"
        extra = ["--set", "s3.sdk_max_retries=1", "--set", "s3.retry_limit=1"]
        fragments = [f"127.0.0.1:{closed_port}"]
    result, event_logs = run_infer(
        tmp_path, "--config", "conf/local.yaml", "--input", input_uri, "--model", model_uri,
        "--output", output_uri, *extra, env=env)
    assert_one_error_line(result, *fragments)
    assert len(event_logs) == 1 and "SparkListenerApplicationStart" in event_logs[0]
    assert "SparkListenerJobStart" not in event_logs[0]  # no Spark job ran
    written = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"cli-out/{tmp_path.name}")
    assert written["KeyCount"] == 0


def test_missing_output_bucket_stops_before_spark_work(spark, config, trained_model, s3):
    """In the test session's Spark (a job run costs a minute): the `JobError` that the job
    prints as its one line, and no Spark job in the run's job group."""
    spark.sparkContext.setJobGroup("missing-output-bucket", "missing-output-bucket")
    try:
        with pytest.raises(JobError, match=f"{MISSING_BUCKET}.*does not exist"):
            run_inference(spark, config, InputSource(PREFIX, _cli_input(s3)), MODEL_URI,
                          f"s3a://{MISSING_BUCKET}/results")
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            spark.sparkContext.setLocalProperty(key, None)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup("missing-output-bucket") == []


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
    [report, picture] = sorted(o["Key"] for o in reports)  # <run_id>.json, <run_id>.png
    assert (report.endswith(".json"), picture) == (True, report.removesuffix(".json") + ".png")
    run_id = report.rsplit("/", 1)[1].removesuffix(".json")
    output = f"s3a://{BUCKET}/cli-threshold"
    assert result.stdout.splitlines()[-6:] == [
        f"  predictions          {output}/predictions/run_id={run_id}",
        f"  dead letters         {output}/dead_letter/run_id={run_id}",
        "  graph                off (no graph writes)",
        f"  report               s3a://{BUCKET}/{report}",
        f"  picture              s3a://{BUCKET}/{picture}",
        "  next                 python -m imagegraph.runs.status --config conf/local.yaml "
        f"--output {output}"]
    assert "_reports" not in result.stderr  # the report's path is on stdout, with the summary


def test_the_summary_names_the_graph_and_a_query_that_shows_the_run(endpoints, trained_model,
                                                                    s3):
    """A run with the graph on: the summary's graph line is the endpoint written to, and its
    last line is a command that, run as printed, lists the run's images from the graph."""
    env = endpoints.env()
    result = run_job("infer.py", "--config", "conf/local.yaml", "--input", _cli_input(s3),
                     "--model", MODEL_URI, "--output", f"s3a://{BUCKET}/cli-summary", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    run_id = lines[0].split()[1].removesuffix(":")
    assert f"  graph                {env['GREMLIN_ENDPOINT']}" in lines
    # Python's log lines on stderr are the job's own: no library's (matplotlib's notes on the
    # digits' class names, drawn in the run's picture, were)
    loggers = {match[1] for match in PYTHON_LOG_LINE.finditer(result.stderr)}
    assert loggers and all(name.startswith("imagegraph.") for name in loggers), loggers
    assert lines[-1] == ("  next                 python -m imagegraph.graph.query --config "
                         f"conf/local.yaml run {run_id}")
    command = shlex.split(lines[-1].removeprefix("  next"))
    query = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=120, cwd=services.ROOT)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines()[0].startswith(f"run {run_id}: 2 image(s), ")


def test_a_manifest_row_without_a_key_stops_the_run_with_one_line(spark, config, trained_model,
                                                                  s3):
    """A row with a bucket and no key names no object: nothing to read, nothing to dead-letter
    under a URI. The run stops with one line counting such rows (it used to fail a task on the
    null URI, then the job)."""
    s3.put_object(Bucket=BUCKET, Key="manifests/keyless.csv",
                  Body=f"bucket,key\n{BUCKET},cli-in/a.png\n{BUCKET},\n".encode())
    no_graph = replace(config, graph=replace(config.graph, enabled=False))
    with pytest.raises(JobError, match=r"^manifest s3a://imagegraph-test/manifests/keyless.csv: "
                                       r"1 row\(s\) name no object"):
        run_inference(spark, no_graph,
                      InputSource(MANIFEST, f"s3a://{BUCKET}/manifests/keyless.csv"), MODEL_URI,
                      f"s3a://{BUCKET}/cli-out/keyless")


def test_log_format_json_writes_every_stderr_line_as_a_json_object(endpoints, trained_model, s3):
    """A run with `--log-format json` (Spark's JVM logging quiet, conf/log4j2.properties): each
    line on stderr is a JSON object with the four keys, its chunk's line carries the run id (as
    the summary on stdout names it) and the chunk, its progress lines the run id, and the
    Python worker's model-load line is one of them."""
    result = run_job("infer.py", "--config", "conf/local.yaml", "--input", _cli_input(s3),
                     "--model", MODEL_URI, "--output", f"s3a://{BUCKET}/cli-json-logs",
                     "--no-graph", "--log-format", "json", env={
                         **endpoints.env(), "SPARK_LOCAL_IP": "127.0.0.1",
                         "PYSPARK_SUBMIT_ARGS": f"--driver-java-options "
                                                f"-Dlog4j2.configurationFile={QUIET_LOG4J} "
                                                "pyspark-shell"})
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.splitlines()[0].split()[1].removesuffix(":")
    assert [line for line in result.stderr.splitlines() if not _json_log_line(line)] == []
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["chunk"] for line in lines
            if line.get("run_id") == run_id and line["message"].startswith(f"run {run_id} chunk")
            ] == [1]
    progress = [line for line in lines if line["logger"] == "imagegraph.runs.progress"]
    assert progress and all(line["run_id"] == run_id for line in progress)
    loaded = [line["message"] for line in lines if line["logger"] == "imagegraph.model.cache"]
    assert loaded and all(message.startswith("imagegraph: model digits@v1 loaded in python "
                                             "worker ") for message in loaded)


def _json_log_line(line: str) -> bool:
    """Whether `line` is a JSON object with the keys every log line has."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return False
    return isinstance(parsed, dict) and {"time", "level", "logger", "message"} <= set(parsed)
