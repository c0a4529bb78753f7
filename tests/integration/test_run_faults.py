"""Faults in the middle of whole inference runs: S3 answering 500 and 503 to a share of reads,
a Python worker killed in the middle of a classifying task, the Gremlin Server restarted while
the graph is loaded. Each run completes, its report reconciles, the graph holds every image
exactly once with the bytes that were put (sha256), and the Parquet output has one row per
image."""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest
import sample_images
import services
from conftest import BUCKET, DIGITS_USED, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from s3_fault_proxy import S3FaultProxy
from s3_objects import put_objects

from imagegraph.graph.connection import remote_traversal
from imagegraph.infer.job import run_inference
from imagegraph.storage.outputs import PREDICTIONS_DIR
from imagegraph.storage.selection import PREFIX, InputSource, Shard

TOP_K = 3  # inference.top_k of conf/local.yaml


@pytest.fixture(scope="module")
def digits() -> dict[str, bytes]:
    """{'<digit>/<n>.png': bytes}: 120 real digits, none of those the test model trained on."""
    train, held_out = sample_images.digit_images(limit=DIGITS_USED + 120)
    return {key: data for key, data in {**train, **held_out}.items()
            if int(key.split("/")[1][:-4]) >= DIGITS_USED}


@pytest.fixture
def restartable_gremlin(tmp_path):
    """A Gremlin Server of its own whose graph survives a restart; yields (endpoint, restart)."""
    port = services.free_port()
    endpoint = services.start_gremlin(port, tmp_path, persistent=True)

    def restart():
        services.stop_one("gremlin", tmp_path)
        time.sleep(1.0)
        services.start_gremlin(port, tmp_path, persistent=True)

    yield endpoint, restart
    services.stop_one("gremlin", tmp_path)


def put(s3, bucket: str, prefix: str, objects: dict[str, bytes]) -> dict[str, str]:
    """Put `objects` under s3://bucket/prefix; {canonical uri: sha256} of what was put."""
    put_objects(s3, bucket, prefix, objects)
    return {f"s3://{bucket}/{prefix}{key}": hashlib.sha256(data).hexdigest()
            for key, data in objects.items()}


def assert_every_image_exactly_once(report, graph_config, expected: dict[str, str], spark,
                                    output: str) -> None:
    """`report`, the graph at `graph_config` and the Parquet under `output` account for each
    of `expected` ({uri: sha256}) exactly once, all classified, none dead-lettered."""
    count = len(expected)
    assert (report.listed, report.classified, report.dead_lettered) == (count, count, 0)
    assert (report.graph_written, report.graph_failed) == (count, 0)
    assert report.reconciles()
    with remote_traversal(graph_config) as g:
        images = (g.V().has_label("image").project("id", "sha256", "runs", "edges")
                  .by(T.id).by("sha256")
                  .by(__.out_e("classified_as").values("run_id").dedup().fold())
                  .by(__.out_e("classified_as").count()).to_list())
        assert g.E().has_label("classified_as").count().next() == TOP_K * count
    assert len(images) == count
    assert {i["id"]: i["sha256"] for i in images} == expected
    assert {(tuple(i["runs"]), i["edges"]) for i in images} == {((report.run_id,), TOP_K)}
    rows = (spark.read.parquet(f"{output}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{report.run_id}'").select("uri", "sha256").collect())
    assert sorted((r["uri"], r["sha256"]) for r in rows) == sorted(expected.items())


def empty_graph(graph_config) -> None:
    with remote_traversal(graph_config) as g:
        g.V().drop().iterate()


def run_in_thread(spark, config, input_uri: str, output_uri: str, job_group: str,
                  shard: Shard | None = None):
    """Start `run_inference` (of `shard`, when given) on a thread whose Spark jobs carry
    `job_group`; returns the thread and a dict that holds its report (or error) once it
    ends."""
    outcome: dict = {}

    def run():
        spark.sparkContext.setJobGroup(job_group, job_group)
        try:
            outcome["report"] = run_inference(spark, config, InputSource(PREFIX, input_uri),
                                              MODEL_URI, output_uri, shard=shard)
        except BaseException as exc:  # re-raised by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=job_group)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread, outcome: dict, timeout_s: float = 600):
    thread.join(timeout_s)
    assert not thread.is_alive(), "the run did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


def failed_tasks(spark, job_group: str) -> int:
    """Task attempts that failed in the stages of `job_group`'s jobs."""
    tracker = spark.sparkContext.statusTracker()
    stages = (tracker.getStageInfo(stage) for job in tracker.getJobIdsForGroup(job_group)
              for stage in tracker.getJobInfo(job).stageIds)
    return sum(stage.numFailedTasks for stage in stages if stage is not None)


def through(proxy: S3FaultProxy, config):
    """`config` with the workers' object reads (boto3) sent through `proxy`."""
    return replace(config, s3=replace(config.s3, endpoint=proxy.endpoint))


@contextmanager
def proxied_bucket(spark, bucket: str, proxy: S3FaultProxy):
    """s3a (listing, Parquet) reaches `bucket` (and only it) through `proxy` inside the
    block."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    jvm = spark.sparkContext._jvm
    hadoop.set(f"fs.s3a.bucket.{bucket}.endpoint", proxy.endpoint)
    try:
        yield
    finally:
        hadoop.unset(f"fs.s3a.bucket.{bucket}.endpoint")
        # the cached file system of this bucket still points at the proxy: drop it
        jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI(f"s3a://{bucket}/"),
                                                hadoop).close()


def test_s3_500_and_503_on_reads_are_retried(spark, config, trained_model, s3, digits):
    """The input and output live in a bucket that s3a and the workers' reads reach through the
    fault proxy: every 5th object GET (the images the workers read, the Parquet read back to
    resume) fails."""
    bucket = "imagegraph-s3-faults"
    expected = put(s3, bucket, "in/", digits)
    output = f"s3a://{bucket}/results"
    empty_graph(config.graph)
    with S3FaultProxy(config.s3.endpoint, fail_every=5) as proxy, \
            proxied_bucket(spark, bucket, proxy):
        report = run_inference(spark, through(proxy, config),
                               InputSource(PREFIX, f"s3a://{bucket}/in/"), MODEL_URI, output)
        assert_every_image_exactly_once(report, config.graph, expected, spark, output)
    assert proxy.object_gets > len(digits)
    assert proxy.injected[500] > 0 and proxy.injected[503] > 0
    assert sum(proxy.injected.values()) == proxy.object_gets // 5


def _process_table() -> dict[int, tuple[int, bytes, int]]:
    """{pid: (parent pid, command line, CPU ticks)} of every process /proc shows."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:  # gone meanwhile
            continue
        table[int(entry)] = (int(fields[1]), command, int(fields[11]) + int(fields[12]))
    return table


def _our_python_workers(table) -> dict[int, int]:
    """{pid: CPU ticks} of the Python workers pyspark.daemon forked for this test process's
    Spark (other users' Spark on this machine has its own daemons)."""
    def descends_from_us(pid: int) -> bool:
        while pid > 1 and pid in table:
            if pid == os.getpid():
                return True
            pid = table[pid][0]
        return False

    daemons = {pid for pid, (_, command, _) in table.items()
               if b"pyspark.daemon" in command and descends_from_us(pid)}
    return {pid: ticks for pid, (parent, _, ticks) in table.items() if parent in daemons}


def test_python_worker_killed_mid_task_is_retried(spark, config, trained_model, s3, digits):
    """The input's reads are held at the proxy, so the classifying tasks stay in the middle
    of their work with their Python workers assigned until one of them is killed."""
    bucket = "imagegraph-worker-kill"
    expected = put(s3, bucket, "in/", digits)
    output = f"s3a://{BUCKET}/worker-kill/results"
    empty_graph(config.graph)
    idle = _our_python_workers(_process_table())  # {pid: CPU ticks}, from earlier runs
    with S3FaultProxy(config.s3.endpoint) as proxy, proxied_bucket(spark, bucket, proxy):
        proxy.hold()
        thread, outcome = run_in_thread(spark, through(proxy, config), f"s3a://{bucket}/in/",
                                        output, "worker-kill")
        deadline = time.monotonic() + 120
        assigned: list[int] = []
        while not (proxy.held and assigned) and time.monotonic() < deadline:
            time.sleep(0.1)
            # a worker forked for this run, or a reused one that received a task's work
            assigned = [pid for pid, ticks in _our_python_workers(_process_table()).items()
                        if ticks > idle.get(pid, -1)]
        assert proxy.held and assigned, "no task got as far as reading its input"
        for pid in assigned:  # those waiting on a held read among them; an idle one is forked anew
            os.kill(pid, signal.SIGKILL)
        proxy.release()
        report = finished(thread, outcome)
    assert failed_tasks(spark, "worker-kill") >= 1, "the kill did not fail a task"
    assert_every_image_exactly_once(report, config.graph, expected, spark, output)


def test_gremlin_restart_mid_load_is_retried(spark, config, trained_model, s3, digits,
                                             restartable_gremlin):
    endpoint, restart = restartable_gremlin
    graph = replace(config.graph, endpoint=endpoint, records_per_request=24, rows_per_flush=20,
                    retry_base_delay_s=0.2, retry_max_delay_s=2.0, failover_budget_s=120.0)
    expected = put(s3, BUCKET, "gremlin-restart/in/", digits)
    output = f"s3a://{BUCKET}/gremlin-restart/results"
    thread, outcome = run_in_thread(spark, replace(config, graph=graph),
                                    f"s3a://{BUCKET}/gremlin-restart/in/", output,
                                    "gremlin-restart")
    with remote_traversal(graph) as g:
        while thread.is_alive() and g.V().has_label("image").count().next() < 10:
            time.sleep(0.05)
        written_before_restart = g.V().has_label("image").count().next()
    restart()
    report = finished(thread, outcome)
    assert 10 <= written_before_restart < len(digits), "the restart missed the graph load"
    assert report.graph_retries > 0
    assert_every_image_exactly_once(report, graph, expected, spark, output)


def test_python_workers_killed_while_writing_the_graph(spark, config, trained_model, s3,
                                                        digits):
    """Every Python worker of this Spark is SIGKILLed once the graph load has written some
    images: the writing tasks fail and run again from the staged results, and the report's
    counts (read back from committed task outcomes, not accumulators) equal what the graph and
    the Parquet output hold."""
    graph = replace(config.graph, records_per_request=12, rows_per_flush=4)
    expected = put(s3, BUCKET, "writer-kill/in/", digits)
    output = f"s3a://{BUCKET}/writer-kill/results"
    empty_graph(config.graph)
    thread, outcome = run_in_thread(spark, replace(config, graph=graph),
                                    f"s3a://{BUCKET}/writer-kill/in/", output, "writer-kill")
    with remote_traversal(graph) as g:
        while thread.is_alive() and g.V().has_label("image").count().next() < 10:
            time.sleep(0.05)
        written_before_kill = g.V().has_label("image").count().next()
    for pid in _our_python_workers(_process_table()):
        os.kill(pid, signal.SIGKILL)
    report = finished(thread, outcome)
    assert 10 <= written_before_kill < len(digits), "the kill missed the graph load"
    assert failed_tasks(spark, "writer-kill") >= 1, "the kill did not fail a task"
    assert_every_image_exactly_once(report, graph, expected, spark, output)


def test_gremlin_endpoint_unreachable_mid_load_for_longer_than_attempts_last(
        spark, config, trained_model, s3, digits, gremlin_proxy, proxied_gremlin_endpoint):
    """Toxiproxy between the writers and Gremlin Server is disabled for 6 s once the load has
    written some images (open connections cut, new ones refused, as in a Neptune failover).
    Three attempts would last about a second; lost connections are retried for
    graph.failover_budget_s (60 s) instead: the run completes with no dead letter."""
    graph = replace(config.graph, endpoint=proxied_gremlin_endpoint, records_per_request=24,
                    rows_per_flush=20, max_attempts=3, retry_base_delay_s=0.2,
                    retry_max_delay_s=1.0, failover_budget_s=60)
    expected = put(s3, BUCKET, "gremlin-outage/in/", digits)
    output = f"s3a://{BUCKET}/gremlin-outage/results"
    empty_graph(config.graph)
    gremlin_proxy.add_latency(latency_ms=30)  # a load of several seconds: the outage lands in it
    thread, outcome = run_in_thread(spark, replace(config, graph=graph),
                                    f"s3a://{BUCKET}/gremlin-outage/in/", output,
                                    "gremlin-outage")
    with remote_traversal(config.graph) as g:
        while thread.is_alive() and g.V().has_label("image").count().next() < 10:
            time.sleep(0.05)
        written_before_outage = g.V().has_label("image").count().next()
    gremlin_proxy.disable()
    time.sleep(6)
    gremlin_proxy.enable()
    report = finished(thread, outcome)
    assert 10 <= written_before_outage < len(digits), "the outage missed the graph load"
    assert report.graph_retries > 0 and report.dead_lettered == 0
    assert_every_image_exactly_once(report, config.graph, expected, spark, output)


def test_object_deleted_after_the_listing_is_dead_lettered(spark, config, trained_model, s3,
                                                           digits):
    """The workers' reads are held at the proxy until the listing is staged and classifying
    has begun; then one object is deleted. Nothing lists again: that object is read, found
    missing and dead-lettered, every other one is written, and the run reconciles."""
    bucket = "imagegraph-deleted"
    expected = put(s3, bucket, "in/", digits)
    gone = sorted(expected)[3]
    output = f"s3a://{BUCKET}/deleted/results"
    empty_graph(config.graph)
    with S3FaultProxy(config.s3.endpoint) as proxy:
        proxy.hold()
        thread, outcome = run_in_thread(spark, through(proxy, config), f"s3a://{bucket}/in/",
                                        output, "deleted-object")
        deadline = time.monotonic() + 300
        while not proxy.held and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proxy.held, "no task got as far as reading its input"
        s3.delete_object(Bucket=bucket, Key=gone.split(f"s3://{bucket}/", 1)[1])
        proxy.release()
        report = finished(thread, outcome)
    assert report.reconciles(), report.disagreements()
    assert (report.listed, report.written, report.committed_dead_letters) == (
        len(digits), len(digits) - 1, 1)
    assert report.dead_lettered_by_reason == {"object not found": 1}
    letters = spark.read.parquet(f"{output}/dead_letter").where(
        f"run_id = '{report.run_id}'").collect()
    assert [(r["uri"], r["stage"]) for r in letters] == [(gone, "read")]
