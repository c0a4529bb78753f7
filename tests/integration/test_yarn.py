"""The infer step as an EMR step runs it: `spark-submit --deploy-mode cluster` to YARN (a
ResourceManager, two NodeManagers, a NameNode and a DataNode, each its own JVM:
dev/yarn_cluster.py), with the packed environment through `--archives`, staged in HDFS and
unpacked by YARN (dev/cluster_jobs.py), over 21 objects in the test S3:

- the driver runs inside the application master's container (its summary is in that
  container's stdout, not in spark-submit's output) and the application has one attempt;
- the run report reconciles, and predictions equal those of a `local[2]` run;
- a driver that fails is not attempted again: one attempt, FAILED, and the job's one-line error
  in the container's stdout; this run with `python_env: node_archive` (the environment
  unpacked beforehand as the bootstrap action does, nothing shipped);
- an executor whose container outgrows its memory is killed by YARN, and the run stops with one
  line that says so, in its output and in its failed report;
- training's petastorm cache at an `hdfs://` URI (conf/emr.yaml's) is written and read back
  through WebHDFS at the NameNode's HTTP address.

Needs build/package (`make package`) and build/hadoop (`make yarn-jars`); `make test` builds both.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import cluster_jobs
import pytest
import sample_images
import yarn_cluster
from conftest import BUCKET, MODEL_URI
from s3_objects import put_objects
from spark_cluster import ClusterError
from test_cluster import PREDICTION_COLUMNS, dead_letter_uris, predictions, read_report
from test_training import read_each_pass

from imagegraph.infer.job import run_inference
from imagegraph.storage.selection import PREFIX, InputSource
from imagegraph.train.cache_store import petastorm_url

INPUT = f"s3a://{BUCKET}/yarn/input/"
YARN_OUTPUT = f"s3a://{BUCKET}/yarn/on-yarn"
LOCAL_OUTPUT = f"s3a://{BUCKET}/yarn/local"
DIGITS = 20
SUBMIT_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def yarn(tmp_path_factory):
    """The one YARN cluster of these tests, stopped when the module ends."""
    if missing := cluster_jobs.missing_package():
        pytest.fail(missing)
    run_dir = tmp_path_factory.mktemp("yarn")
    started = yarn_cluster.start(run_dir)
    yield started
    yarn_cluster.stop(run_dir)


@pytest.fixture(scope="module")
def yarn_input(s3, dataset):
    """21 objects: 20 digits and a truncated JPEG; {uri: bytes}."""
    train = dict(sorted(dataset["train"].items())[:DIGITS])
    objects = {**{f"digits/{key}": body for key, body in train.items()},
               **sample_images.corrupt_image()}
    put_objects(s3, BUCKET, "yarn/input/", objects)
    return {f"s3://{BUCKET}/yarn/input/{key}": body for key, body in objects.items()}


def submit_infer(yarn, endpoints, work_dir: Path, input_uri: str, output: str,
                 node_env_dir: Path | None = None, spark_options: tuple = ()
                 ) -> tuple[int, str, str]:
    """Run the rendered infer step on `yarn` in cluster mode (with `node_env_dir`, as
    `python_env: node_archive` renders it; `spark_options` last); return (spark-submit's exit
    code, its output, the application's id)."""
    submission = cluster_jobs.yarn_submission(
        yarn, "infer", {"input": input_uri, "model": MODEL_URI, "output": output}, work_dir,
        endpoints.env(), ("--partitions", "2", "--progress-interval", "5"),
        spark_options=spark_options, node_env_dir=node_env_dir)
    log = work_dir / "spark-submit.log"
    proc = submission.run(log)
    try:
        proc.wait(timeout=SUBMIT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        proc.wait()
        pytest.fail(f"spark-submit ran over {SUBMIT_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")
    text = log.read_text(errors="replace")
    ids = re.findall(r"Submitted application (application_\d+_\d+)", text)
    assert ids, f"no application was submitted:\n{text[-5000:]}"
    return proc.returncode, text, ids[0]


def attempts(yarn, application_id: str) -> list[dict]:
    """The application's attempts, from the ResourceManager's REST API."""
    return yarn.rest(f"apps/{application_id}/appattempts")["attempts"]


def final_report(log: str) -> dict[str, str]:
    """The last application report spark-submit printed (YARN's client reads it from the
    ResourceManager): its state, `final status` and `diagnostics`."""
    states = re.findall(r"Application report for \S+ \(state: (\w+)\)", log)
    fields = dict(re.findall(r"^\t (final status|diagnostics): (.*)$", log, re.MULTILINE))
    return {"state": states[-1], **fields}


@pytest.fixture(scope="module")
def yarn_run(yarn, endpoints, trained_model, graph, yarn_input, s3, tmp_path_factory):
    code, log, application_id = submit_infer(yarn, endpoints, tmp_path_factory.mktemp("run"),
                                             INPUT, YARN_OUTPUT)
    assert code == 0, log[-5000:]
    stdout = yarn.driver_output(application_id, "stdout")
    return {"log": log, "application_id": application_id, "driver_stdout": stdout,
            "report": read_report(s3, YARN_OUTPUT, stdout)}


def test_a_disk_past_the_nodemanagers_limit_stops_the_start_with_their_health_report(
        tmp_path, monkeypatch):
    # before the module's cluster starts: one cluster at a time; a limit below this disk's use
    usage = shutil.disk_usage(tmp_path)
    used_percent = 100 * (1 - usage.free / usage.total)
    monkeypatch.setattr(yarn_cluster, "DISK_FULL_PERCENT", round(used_percent / 2, 1))
    with pytest.raises(ClusterError, match=r"^a NodeManager is unhealthy: 1/1 local-dirs usable "
                       r"space is below configured utilization percentage"):
        yarn_cluster.start(tmp_path / "yarn")
    assert list((tmp_path / "yarn").glob("*.pid")) == []


def test_the_driver_runs_in_the_application_master_container_once(yarn, yarn_run):
    report = final_report(yarn_run["log"])
    assert (report["state"], report["final status"]) == ("FINISHED", "SUCCEEDED")
    assert len(attempts(yarn, yarn_run["application_id"])) == 1
    summary = "reconciled           yes: listed 21 = written 20 + dead-lettered 1 + skipped 0"
    assert summary in yarn_run["driver_stdout"]
    assert summary not in yarn_run["log"]  # spark-submit only followed the application


def test_the_report_reconciles_and_outputs_equal_a_local_run(yarn_run, spark, config, graph,
                                                              yarn_input):
    report = yarn_run["report"]
    assert report["reconciled"] and report["disagreements"] == []
    assert (report["listed"], report["classified"], report["dead_lettered"]) == (21, 20, 1)
    assert report["graph_written"] == report["graph_images"] == 20
    on_yarn = predictions(spark, YARN_OUTPUT, report["run_id"])
    local = run_inference(spark, config, InputSource(PREFIX, INPUT), MODEL_URI, LOCAL_OUTPUT)
    assert local.reconciles()
    on_local = predictions(spark, LOCAL_OUTPUT, local.run_id)
    assert len(on_yarn) == 20
    assert [{k: row[k] for k in PREDICTION_COLUMNS} for row in on_yarn] == \
        [{k: row[k] for k in PREDICTION_COLUMNS} for row in on_local]
    for yarn_row, local_row in zip(on_yarn, on_local):
        assert yarn_row["scores"] == pytest.approx(local_row["scores"], abs=1e-5)
    assert dead_letter_uris(spark, YARN_OUTPUT, report["run_id"]) == \
        [f"s3://{BUCKET}/yarn/input/{sample_images.CORRUPT_KEY}"]


@pytest.fixture(scope="module")
def node_env_dir(yarn) -> Iterator[Path]:
    """With `python_env: node_archive`: the environment unpacked once beforehand, as the
    bootstrap action does on every node, and named by the rendered step; nothing shipped;
    deleted when the module ends (2 GB)."""
    unpacked = Path(yarn.run_dir) / "environment"
    cluster_jobs.unpack_node_env(cluster_jobs.PACKAGE_DIR, unpacked)
    yield unpacked
    shutil.rmtree(unpacked)


def test_a_failed_driver_is_not_attempted_again(yarn, endpoints, trained_model, yarn_run,
                                                 node_env_dir, tmp_path_factory):
    code, log, application_id = submit_infer(
        yarn, endpoints, tmp_path_factory.mktemp("failed"), "s3a://no-such-bucket/images/",
        f"s3a://{BUCKET}/yarn/failed", node_env_dir)
    assert "--archives" not in log and "imagegraph-env.tar.gz" not in log
    assert code != 0
    assert len(attempts(yarn, application_id)) == 1
    report = final_report(log)
    # FINISHED: the one attempt unregistered as FAILED; a driver YARN may attempt again ends
    # in state FAILED instead (seen with spark.yarn.maxAppAttempts=1 taken out of the step)
    assert (report["state"], report["final status"]) == ("FINISHED", "FAILED")
    assert "User application exited with status 2" in report["diagnostics"], report
    # Spark's PythonRunner merges the driver's stderr into the container's stdout
    errors = [line for line in yarn.driver_output(application_id, "stdout").splitlines()
              if line.startswith("infer.py: error: ")]
    assert len(errors) == 1, errors
    assert re.fullmatch(r"infer.py: error: \S+: the bucket no-such-bucket does not exist",
                        errors[0]), errors


def test_an_hdfs_cache_is_written_and_read_back_through_webhdfs(yarn, spark, config):
    http_address = yarn.name_node.removeprefix("http://")
    parent = petastorm_url(f"{yarn.hdfs}/tmp/imagegraph-petastorm", http_address)
    assert parent == f"webhdfs://{http_address}/tmp/imagegraph-petastorm"
    (labels,) = read_each_pass(spark, config, parent, passes=1)
    assert sorted(labels) == list(range(97))


def test_an_executor_over_its_memory_is_killed_and_the_run_says_so_in_one_line(
        yarn, endpoints, trained_model, yarn_input, node_env_dir, s3, tmp_path_factory):
    # 512 MiB of heap and 1 MiB of overhead: a 640 MiB container (YARN rounds up to 128 MiB),
    # which the executor's JVM and a Python worker holding TensorFlow and the model outgrow;
    # one task failure ends the job (EMR's default, 4, repeats the same kill 4 times)
    output = f"s3a://{BUCKET}/yarn/killed"
    code, log, application_id = submit_infer(
        yarn, endpoints, tmp_path_factory.mktemp("killed"), INPUT, output, node_env_dir,
        spark_options=("--executor-memory", "512m", "--conf", "spark.executor.memoryOverhead=1m",
                       "--conf", "spark.task.maxFailures=1"))
    assert code != 0
    assert "User application exited with status 2" in final_report(log)["diagnostics"]
    expected = (r"YARN killed a Spark executor for exceeding its container's physical memory "
                r"limit \([0-9.]+ [KMG]?B of [0-9.]+ [KMG]?B physical memory used\); the "
                r"Python workers' memory counts in spark.executor.memoryOverhead: raise it, or "
                r"lower inference.batch_size")
    errors = [line for line in yarn.driver_output(application_id, "stdout").splitlines()
              if line.startswith("infer.py: ")]
    assert len(errors) == 1 and re.fullmatch("infer.py: error: " + expected, errors[0]), errors
    (report_key,) = [item["Key"] for item in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="yarn/killed/_reports/")["Contents"]]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=report_key)["Body"].read())
    assert report["status"] == "failed" and re.fullmatch(expected, report["stop"]), report
