"""What only a multi-process cluster shows. jobs/infer.py is submitted to a Spark standalone
cluster (a master and two 1-core workers, each its own JVM: dev/spark_cluster.py) exactly as
the EMR launcher submits it (the rendered infer step: the packed environment through
`--archives`, its Python for the executors, the configuration through `--files`:
dev/cluster_jobs.py), over 101 objects in the test S3, then:

- the executors' Python is the archive's (each executor's model-load line names the
  `./environment` unpacked in its own work directory) and each Python worker loads the model
  once;
- the s3a connector and the S3 credentials reach the executors through the job alone (the
  cluster's daemons start without any AWS or S3 variable), the accumulators of the progress
  line agree with the run report, and the report reconciles;
- the graph and Parquet outputs equal those of a `local[2]` run over the same objects;
- a worker killed (SIGKILL to its JVM) right after a chunk is classified and before that
  chunk's graph writes and commits: the run finishes on the other worker with every object
  written or dead-lettered exactly once. Last in this module; the worker is started again.

Needs build/package (`make package`; `make test` builds it first).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cluster_jobs
import pytest
import sample_images
import spark_cluster
from conftest import BUCKET, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from s3_objects import put_objects

from imagegraph.infer.job import run_inference
from imagegraph.model.cache import LOAD_LINE_PREFIX
from imagegraph.storage.selection import PREFIX, InputSource

INPUT = f"s3a://{BUCKET}/cluster/input/"
CLUSTER_OUTPUT = f"s3a://{BUCKET}/cluster/on-cluster"
LOCAL_OUTPUT = f"s3a://{BUCKET}/cluster/local"
KILLED_OUTPUT = f"s3a://{BUCKET}/cluster/worker-killed"
DIGITS = 96
PARTITIONS = 2                 # per chunk: both executors classify
CHUNK_OBJECTS = 25             # the killed run: 5 chunks
SUBMIT_TIMEOUT_S = 900
PREDICTION_COLUMNS = ["uri", "bucket", "key", "bytes", "width", "height", "format", "sha256",
                      "labels", "model"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The one cluster of these tests, stopped when the module ends so that its three JVMs do
    not idle through the rest of the suite."""
    if missing := cluster_jobs.missing_package():
        pytest.fail(missing)
    run_dir = tmp_path_factory.mktemp("spark-cluster")
    started = spark_cluster.start(run_dir)
    yield started
    spark_cluster.stop(run_dir)


@pytest.fixture(scope="module")
def cluster_input(s3, dataset):
    """101 objects: 96 digits, 4 photos and a truncated JPEG; {uri: bytes}."""
    train = dict(sorted(dataset["train"].items())[:DIGITS])
    objects = {**{f"digits/{key}": body for key, body in train.items()},
               **sample_images.photo_images(), **sample_images.corrupt_image()}
    put_objects(s3, BUCKET, "cluster/input/", objects)
    return {f"s3://{BUCKET}/cluster/input/{key}": body for key, body in objects.items()}


def submit_infer(cluster, endpoints, work_dir: Path, output: str, *job_options: str,
                 while_running=None):
    """Run the rendered infer step on `cluster`; return (exit code, the driver's log, the
    executors' work directories of this application). `while_running(log_path)` is called
    every half second until it returns True."""
    apps_before = _app_dirs(cluster)
    submission = cluster_jobs.submission(
        cluster, "infer", {"input": INPUT, "model": MODEL_URI, "output": output}, work_dir,
        endpoints.env(), ("--partitions", str(PARTITIONS), "--progress-interval", "5",
                          *job_options))
    log = work_dir / "spark-submit.log"
    proc = submission.run(log)
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if while_running is not None and while_running(log):
                while_running = None
            time.sleep(0.5)
    finally:
        if proc.poll() is None:  # over time, or the callback failed
            proc.kill()
            proc.wait()
    if time.monotonic() >= deadline:
        pytest.fail(f"spark-submit ran over {SUBMIT_TIMEOUT_S} s:\n{_tail(log)}")
    executors = sorted(path for app in _app_dirs(cluster) - apps_before
                       for path in app.iterdir() if path.is_dir())
    return proc.returncode, log.read_text(errors="replace"), executors


def _app_dirs(cluster) -> set[Path]:
    return {app for name in cluster.worker_ports
            for app in cluster.worker_dir(name).glob("app-*")}


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def model_loads(executor_dir: Path) -> list[tuple[int, str]]:
    """(pid, sys.prefix) of each model load a Python worker of this executor printed."""
    pattern = re.compile(re.escape(LOAD_LINE_PREFIX) +
                         r" \S+ loaded in python worker (\d+) \((.+)\) in [\d.]+ s$")
    stderr = (executor_dir / "stderr").read_text(errors="replace")
    return [(int(match[1]), match[2]) for match in map(pattern.match, stderr.splitlines())
            if match]


def read_report(s3, output: str, log: str) -> dict:
    (run_id,) = re.findall(r"^run (\S+): ", log, re.MULTILINE)
    key = f"{output.split('/', 3)[3]}/_reports/{run_id}.json"
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def predictions(spark, output: str, run_id: str) -> list[dict]:
    rows = (spark.read.parquet(f"{output}/predictions").where(f"run_id = '{run_id}'")
            .select(*PREDICTION_COLUMNS, "scores").collect())
    return sorted((row.asDict() for row in rows), key=lambda row: row["uri"])


def dead_letter_uris(spark, output: str, run_id: str) -> list[str]:
    return sorted(row.uri for row in spark.read.parquet(f"{output}/dead_letter")
                  .where(f"run_id = '{run_id}'").select("uri").collect())


def graph_state(graph, uris) -> dict:
    """What the graph holds for the images `uris`: each vertex's sha256 and each of their
    classified_as edges with its class, score and model (run ids left out)."""
    images = (graph.V(*uris).project("id", "sha256").by(T.id).by("sha256").to_list())
    edges = (graph.V(*uris).out_e("classified_as")
             .project("id", "image", "class", "score", "model").by(T.id).by(__.out_v().id_())
             .by(__.in_v().id_()).by("score").by("model").to_list())
    return {"images": {image["id"]: image["sha256"] for image in images},
            "edges": {edge["id"]: edge for edge in edges}}


@pytest.fixture(scope="module")
def cluster_run(cluster, endpoints, trained_model, graph, cluster_input, s3, tmp_path_factory):
    code, log, executors = submit_infer(cluster, endpoints,
                                        tmp_path_factory.mktemp("cluster-run"), CLUSTER_OUTPUT)
    assert code == 0, log[-5000:]
    return {"log": log, "executors": executors, "report": read_report(s3, CLUSTER_OUTPUT, log)}


def test_executors_run_the_archives_python_and_load_the_model_once_per_worker(cluster_run):
    executors = cluster_run["executors"]
    assert len(executors) == 2  # one per worker: each its own JVM on its own worker
    for executor_dir in executors:
        loads = model_loads(executor_dir)
        assert loads, f"no model load in {executor_dir / 'stderr'}"
        pids = [pid for pid, _ in loads]
        assert len(pids) == len(set(pids)), f"a Python worker loaded the model twice: {loads}"
        # sys.prefix: the packed environment unpacked into this executor's own directory
        assert {Path(prefix).resolve() for _, prefix in loads} == {
            (executor_dir / "environment").resolve()}


def test_accumulators_and_run_report_reconcile(cluster_run, cluster_input):
    report = cluster_run["report"]
    assert report["reconciled"] and report["disagreements"] == []
    assert report["listed"] == len(cluster_input) == 101
    assert (report["classified"], report["dead_lettered"]) == (100, 1)
    assert report["graph_written"] == report["graph_images"] == 100
    # the last progress line: accumulators added to in the executors' Python workers
    progress = re.findall(r"progress: (\d+)/(\d+) objects .*, (\d+) dead-lettered",
                          cluster_run["log"])
    assert progress[-1] == ("101", "101", "1")
    assert "reconciled           yes: listed 101 = written 100 + dead-lettered 1" \
        in cluster_run["log"]


def test_outputs_equal_a_local_run(cluster_run, spark, config, graph, cluster_input):
    """The cluster's executors read every object (boto3 from the job's configuration) and
    wrote Parquet through s3a; a local[2] run over the same objects gives the same rows and,
    upserting the same ids, leaves the graph as the cluster run left it."""
    run_id = cluster_run["report"]["run_id"]
    on_cluster = predictions(spark, CLUSTER_OUTPUT, run_id)
    image_uris = [row["uri"] for row in on_cluster]
    after_cluster = graph_state(graph, image_uris)
    assert len(after_cluster["images"]) == 100 and len(after_cluster["edges"]) == 300

    local = run_inference(spark, config, InputSource(PREFIX, INPUT), MODEL_URI, LOCAL_OUTPUT)
    assert local.reconciles()
    on_local = predictions(spark, LOCAL_OUTPUT, local.run_id)
    assert [{k: v for k, v in row.items() if k != "scores"} for row in on_cluster] == \
        [{k: v for k, v in row.items() if k != "scores"} for row in on_local]
    for cluster_row, local_row in zip(on_cluster, on_local):
        assert cluster_row["scores"] == pytest.approx(local_row["scores"], abs=1e-5)
    assert dead_letter_uris(spark, CLUSTER_OUTPUT, run_id) == \
        dead_letter_uris(spark, LOCAL_OUTPUT, local.run_id) == \
        [f"s3://{BUCKET}/cluster/input/{sample_images.CORRUPT_KEY}"]

    after_local = graph_state(graph, image_uris)
    assert after_local["images"] == after_cluster["images"]
    assert after_local["edges"].keys() == after_cluster["edges"].keys()
    for edge_id, edge in after_local["edges"].items():
        assert edge["score"] == pytest.approx(after_cluster["edges"][edge_id]["score"], abs=1e-5)
    assert graph.V().has_label("image").count().next() == 100


def _executor_processes(cluster, worker: str) -> list[int]:
    """Pids of executor JVMs launched by `worker` (their command line names its RPC port)."""
    port = cluster.worker_ports[worker][0]
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmdline and \
                f"spark://Worker@{spark_cluster.services.HOST}:{port}".encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(cluster, endpoints, trained_model,
                                                           cluster_run, cluster_input, spark,
                                                           graph, s3, tmp_path_factory):
    """SIGKILL to worker-2's JVM when the driver logs that chunk 1 is classified (staged),
    before its graph writes and commits: its executor goes with it and the rest of the run,
    that chunk's graph writes and commits included, runs on worker-1."""
    killed_at: list[float] = []

    def kill_after_first_chunk(log: Path) -> bool:
        if not re.search(r"chunk 1/\d+: ", log.read_text(errors="replace")):
            return False
        assert _executor_processes(cluster, "worker-2"), "worker-2 has no executor to lose"
        spark_cluster.kill_worker(cluster, "worker-2")
        killed_at.append(time.monotonic())
        return True

    try:
        code, log, executors = submit_infer(
            cluster, endpoints, tmp_path_factory.mktemp("worker-killed"), KILLED_OUTPUT,
            "--set", f"run.objects_per_chunk={CHUNK_OBJECTS}",
            while_running=kill_after_first_chunk)
        assert killed_at, f"chunk 1 was never logged:\n{log[-5000:]}"
        assert _executor_processes(cluster, "worker-2") == []
        assert code == 0, log[-5000:]
        report = read_report(s3, KILLED_OUTPUT, log)
        assert report["reconciled"] and report["chunks"] == 5
        run_id = report["run_id"]
        written = predictions(spark, KILLED_OUTPUT, run_id)
        uris = [row["uri"] for row in written]
        corrupt = f"s3://{BUCKET}/cluster/input/{sample_images.CORRUPT_KEY}"
        assert sorted(uris) == sorted(set(cluster_input) - {corrupt})  # each exactly once
        assert dead_letter_uris(spark, KILLED_OUTPUT, run_id) == [corrupt]
        run_images = (graph.E().has("classified_as", "run_id", run_id).out_v().id_()
                      .to_list())
        assert sorted(set(run_images)) == sorted(uris)
        assert sorted(run_images) == sorted(uris * 3)  # three edges each, none twice
    finally:
        if cluster.alive_workers() < 2:
            spark_cluster.start_worker(cluster, "worker-2")
