"""One run per (output, model, shard) at a time.

The leases on their own, on file:// and on moto's S3 server over HTTP (conditional writes):
a second taker of a live lease or of an overlapping shard is refused, another shard of the
same count is not; a lease left by a process killed with SIGKILL is taken over once expired;
a holder stopped (SIGSTOP) past its lease's lifetime finds, when it resumes, that its renewal
fails and leaves the new holder's lease alone; a renewal that S3's 503s keep in boto3's retries
past the hold is named in the stop line.

Then the job: a run of a shard whose reads are held at a proxy (so it is surely in the middle
of its work) makes `jobs/infer.py` on the same shard exit 2 with one line naming it, while
the other shard runs; a lease left by a killed run is taken over by the next run once expired;
a run whose renewals keep failing stops before its next chunk, commits nothing more and
writes its report marked failed; a run whose lease a run of an overlapping shard takes over
while it is in the middle of a chunk stops before committing that chunk, which reaches neither
predictions/ nor the graph.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import sample_images
import services
from conftest import MODEL_URI
from pyspark.sql import functions as F
from s3_fault_proxy import S3FaultProxy
from s3_objects import put_objects
from test_accounting import runs_by_image
from test_run_faults import finished, run_in_thread, through

from imagegraph.errors import JobError
from imagegraph.infer.job import run_inference
from imagegraph.runs.lease import take_lease
from imagegraph.storage.selection import PREFIX, InputSource, Shard, shard_of

BUCKET = "imagegraph-leases"
MODEL = "digits@v1"
STOP_CAUSES = (re.escape(", over the 2 s it is held after a renewal (TTL 3 s); ")
               + r"(a renewal in flight for \d+ s; )?")
"""The end of a lease's stop line before its last renewal error, for a 3 s TTL: a renewal
may be on its way when the run checks its hold, and the line then says so first."""
QUIET_LOG4J = services.ROOT / "conf" / "log4j2.properties"
# Takes the lease on (argv[1], MODEL, shard 0/2) with a TTL of argv[2] seconds, as run
# `holder-run`, and says so; then "kill": dies by SIGKILL, leaving the lease behind; "wait":
# waits for a line on stdin (the test stops and resumes it meanwhile), gives its renewer a
# turn, and says whether it still holds the lease before releasing it.
_HOLDER = """
import os, signal, sys, time
from imagegraph.config import S3Config
from imagegraph.runs.lease import take_lease
from imagegraph.storage.selection import Shard

output, ttl_s, action, endpoint, key, secret = sys.argv[1:7]
s3 = S3Config(endpoint=endpoint, access_key=key, secret_key=secret, path_style_access=True)
lease = take_lease(output, "%s", Shard(0, 2), "holder-run", float(ttl_s), s3)
print("taken", flush=True)
if action == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.readline()
time.sleep(float(ttl_s))
try:
    lease.ensure_held()
    print("held", flush=True)
except Exception as exc:
    print("lost:", exc, flush=True)
lease.release()
""" % MODEL


@pytest.fixture(params=["file", "s3a", "s3"])
def output(request, tmp_path) -> str:
    """An output location of each kind a run writes to."""
    if request.param == "file":
        return (tmp_path / "results").as_uri()
    s3 = request.getfixturevalue("s3")
    put_objects(s3, BUCKET, "", {})
    return f"{request.param}://{BUCKET}/{tmp_path.name}/results"


def lease_files(output_uri: str, s3) -> dict[str, dict]:
    """{file name: JSON body} of the leases of MODEL under `output_uri`."""
    parts = urlsplit(f"{output_uri}/_leases/{MODEL}")
    if parts.scheme == "file":
        if not os.path.isdir(parts.path):
            return {}
        return {name: json.loads(open(os.path.join(parts.path, name)).read())
                for name in os.listdir(parts.path) if name.endswith(".json")}
    prefix = parts.path.lstrip("/") + "/"
    listed = s3.list_objects_v2(Bucket=parts.netloc, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix):]: json.loads(
        s3.get_object(Bucket=parts.netloc, Key=item["Key"])["Body"].read())
        for item in listed}


def start_holder(output_uri: str, ttl_s: float, action: str, config) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, output_uri, str(ttl_s), action, config.s3.endpoint,
         config.s3.access_key, config.s3.secret_key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "taken", holder.stderr.read()
    return holder


def test_a_live_lease_refuses_its_shard_and_overlapping_shards_only(output, config, s3):
    first = take_lease(output, MODEL, Shard(0, 2), "first-run", 60.0, config.s3)
    with pytest.raises(JobError) as refused:
        take_lease(output, MODEL, Shard(0, 2), "second-run", 60.0, config.s3)
    message = str(refused.value)
    assert message.startswith("run first-run on ")
    assert f"is processing shard 0/2 of {output} with {MODEL}: its lease {output}/_leases/" \
           f"{MODEL}/0-of-2.json was renewed " in message
    with pytest.raises(JobError, match="^run first-run on "):
        take_lease(output, MODEL, None, "whole-run", 60.0, config.s3)
    with pytest.raises(JobError, match="^run first-run on "):
        take_lease(output, MODEL, Shard(2, 4), "shares-objects", 60.0, config.s3)
    quarter_1 = take_lease(output, MODEL, Shard(1, 4), "quarter-1", 60.0, config.s3)
    quarter_3 = take_lease(output, MODEL, Shard(3, 4), "quarter-3", 60.0, config.s3)
    with pytest.raises(JobError, match="^run quarter-[13] on .* is processing shard [13]/4 "):
        take_lease(output, MODEL, Shard(1, 2), "other-half", 60.0, config.s3)
    other_model = take_lease(output, "digits@v2", Shard(0, 2), "other-model", 60.0, config.s3)
    held = lease_files(output, s3)
    assert {name: body["run_id"] for name, body in held.items()} == {
        "0-of-2.json": "first-run", "1-of-4.json": "quarter-1", "3-of-4.json": "quarter-3"}
    assert held["0-of-2.json"]["shard"] == "0/2" and held["0-of-2.json"]["ttl_s"] == 60.0
    for lease in (first, quarter_1, quarter_3, other_model):
        lease.release()
    assert lease_files(output, s3) == {}
    with take_lease(output, MODEL, Shard(0, 2), "after-release", 60.0, config.s3):
        assert lease_files(output, s3)["0-of-2.json"]["run_id"] == "after-release"
    assert lease_files(output, s3) == {}


def test_a_lease_left_by_a_killed_run_is_taken_over_once_expired(output, config, s3):
    holder = start_holder(output, 3.0, "kill", config)
    assert holder.wait(30) == -signal.SIGKILL
    with pytest.raises(JobError, match="^run holder-run on "):
        take_lease(output, MODEL, Shard(0, 2), "too-early", 60.0, config.s3)
    time.sleep(4.5)  # 3 s after its last renewal, on the store's clock of whole seconds
    with take_lease(output, MODEL, Shard(0, 2), "next-run", 60.0, config.s3):
        assert lease_files(output, s3)["0-of-2.json"]["run_id"] == "next-run"
    assert lease_files(output, s3) == {}


def test_a_holder_that_outlived_its_lease_cannot_renew_it_over_the_new_holder(output, config,
                                                                              s3):
    holder = start_holder(output, 2.0, "wait", config)
    os.kill(holder.pid, signal.SIGSTOP)  # as a long pause of a driver would
    try:
        time.sleep(4.0)
        new = take_lease(output, MODEL, Shard(0, 2), "new-holder", 60.0, config.s3)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate("\n", timeout=30)
    assert out.strip() == ("lost: run holder-run lost its lease "
                           f"{output}/_leases/{MODEL}/0-of-2.json: another run took it over "
                           "after it expired"), err
    assert lease_files(output, s3)["0-of-2.json"]["run_id"] == "new-holder"
    new.ensure_held()
    new.release()
    assert lease_files(output, s3) == {}


# The job itself.

def run_infer(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(services.ROOT / "jobs" / "infer.py"),
                           "--config", "conf/local.yaml", "--no-graph", *args],
                          capture_output=True, text=True, timeout=300, cwd=services.ROOT,
                          env={**os.environ, **env, "SPARK_LOCAL_IP": "127.0.0.1",
                               "PYSPARK_SUBMIT_ARGS": f"--driver-java-options "
                                                      f"-Dlog4j2.configurationFile={QUIET_LOG4J} "
                                                      "pyspark-shell"})


def test_a_renewal_retrying_503s_past_the_hold_is_named_in_the_stop_line(config, s3, tmp_path):
    """S3 answers the lease's renewals 503 SlowDown (`put_statuses`), so boto3 retries one
    renewal up to `s3.max_attempts` (10) times with backoff, longer than the 2 s a 3 s lease is
    held: the stop line names that renewal in flight (it used to say `last renewal error:
    none`). Once S3 answers again the renewal succeeds late and the lease is released."""
    put_objects(s3, BUCKET, "", {})
    output = f"s3://{BUCKET}/{tmp_path.name}/results"
    with S3FaultProxy(config.s3.endpoint) as proxy:
        slow = replace(config.s3, endpoint=proxy.endpoint, max_attempts=10)
        lease = take_lease(output, MODEL, None, "slow-renewals", 3.0, slow)
        proxy.put_statuses = {f"/{BUCKET}/{tmp_path.name}/results/_leases/{MODEL}/all.json": 503}
        time.sleep(2.5)  # the first renewal, sent after 1 s, is still being retried
        with pytest.raises(JobError) as lost:
            lease.ensure_held()
        proxy.put_statuses = {}
        lease.release()  # waits for the renewal in flight to end
    assert proxy.injected[503] >= 2
    line = str(lost.value)
    assert line.startswith(f"run slow-renewals lost its lease {output}/_leases/{MODEL}/all.json: "
                           f"not renewed for "), line
    assert re.search(r", over the 2 s it is held after a renewal \(TTL 3 s\); a renewal in "
                     r"flight for [12] s$", line), line
    assert lease_files(output, s3) == {}


def test_a_second_run_of_a_shard_in_progress_exits_2_and_another_shard_runs(
        spark, config, trained_model, s3, endpoints):
    _, held_out = sample_images.digit_images(limit=48)
    objects = dict(list(held_out.items())[:8])
    put_objects(s3, BUCKET, "job/in/", objects)
    in_shard_0 = sum(shard_of(f"s3://{BUCKET}/job/in/{key}", 2) == 0 for key in objects)
    assert 0 < in_shard_0 < len(objects)
    input_uri, output = f"s3a://{BUCKET}/job/in/", f"s3a://{BUCKET}/job/results"
    job_args = ["--input", input_uri, "--model", MODEL_URI, "--output", output]
    quiet = replace(config, graph=replace(config.graph, enabled=False))
    outcome: dict = {}
    with S3FaultProxy(config.s3.endpoint) as proxy:
        proxy.hold()  # the first run's workers wait in their first object reads
        first = threading.Thread(target=lambda: outcome.update(report=run_inference(
            spark, replace(quiet, s3=replace(quiet.s3, endpoint=proxy.endpoint)),
            InputSource(PREFIX, input_uri), MODEL_URI, output, shard=Shard(0, 2))))
        first.start()
        try:
            deadline = time.monotonic() + 180
            while not proxy.held and first.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proxy.held, "the first run never reached its reads"
            holder = lease_files(output, s3)["0-of-2.json"]

            second = run_infer(endpoints.env(), *job_args, "--shard", "0/2")
            assert second.returncode == 2, second.stderr
            [line] = second.stderr.strip().splitlines()
            assert line.startswith(
                f"infer.py: error: run {holder['run_id']} on {holder['host']} "
                f"(pid {os.getpid()}) is processing shard 0/2 of {output} with {MODEL}: its "
                f"lease {output}/_leases/{MODEL}/0-of-2.json was renewed "), line
            assert line.endswith(" run again once the lease has expired"), line
            other = run_infer(endpoints.env(), *job_args, "--shard", "1/2")
            assert other.returncode == 0, other.stderr
            assert f"classified           {len(objects) - in_shard_0}\n" in other.stdout
            still = lease_files(output, s3)["0-of-2.json"]  # renewed, by the first run only
            assert (still["run_id"], still["started_at"]) == \
                (holder["run_id"], holder["started_at"])
        finally:
            proxy.release()
            first.join(300)
    assert outcome["report"].classified == in_shard_0
    assert lease_files(output, s3) == {}


def test_the_next_run_takes_over_the_lease_of_a_killed_run(spark, config, trained_model, s3):
    """And removes the killed run's staging area, as its own, through s3a."""
    _, held_out = sample_images.digit_images(limit=12)
    put_objects(s3, BUCKET, "takeover/in/", dict(list(held_out.items())[:2]))
    output = f"s3a://{BUCKET}/takeover/results"
    staging = "takeover/results/_staging/"
    holder = start_holder(output, 3.0, "kill", config)
    assert holder.wait(30) == -signal.SIGKILL
    assert lease_files(output, s3)["0-of-2.json"]["run_id"] == "holder-run"
    s3.put_object(Bucket=BUCKET, Key=f"{staging}holder-run/selected/part-0.parquet", Body=b"x")
    time.sleep(4.5)
    quiet = replace(config, graph=replace(config.graph, enabled=False))
    report = run_inference(spark, quiet, InputSource(PREFIX, f"s3a://{BUCKET}/takeover/in/"),
                           MODEL_URI, output, shard=Shard(0, 2))
    assert report.reconciles()
    assert lease_files(output, s3) == {}
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix=staging).get("Contents", [])
    assert [item["Key"] for item in left if item["Key"] != staging] == []  # s3a's marker aside


def test_a_run_whose_lease_renewals_fail_stops_commits_nothing_more_and_reports_failed(
        spark, config, trained_model, s3, tmp_path):
    """Two chunks; once the first is committed (the second's reads held at the proxy), the
    run's lease store is made unusable (its lock file replaced by a directory), so every
    renewal fails; past two thirds of the TTL the run stops before the second chunk."""
    _, held_out = sample_images.digit_images(limit=48)
    objects = dict(list(held_out.items())[:8])
    assert len(objects) == 8  # two chunks of 4
    put_objects(s3, BUCKET, "lost/in/", objects)
    chunks = {row["uri"]: row["chunk"] for row in spark.createDataFrame(
        [(f"s3://{BUCKET}/lost/in/{key}",) for key in objects], "uri string")
        .select("uri", F.pmod(F.xxhash64("uri"), F.lit(2)).alias("chunk")).collect()}
    first = {uri for uri, chunk in chunks.items() if chunk == 0}
    assert 0 < len(first) < len(objects)
    output = (tmp_path / "out").as_uri()
    out_dir, lease_dir = tmp_path / "out", tmp_path / "out" / "_leases" / MODEL
    run_config = replace(config, graph=replace(config.graph, enabled=False),
                         run=replace(config.run, objects_per_chunk=4, lease_ttl_s=3.0))
    with S3FaultProxy(config.s3.endpoint) as proxy:
        # one object of the second chunk waits: its task holds one slot, the other commits
        proxy.hold(frozenset({min(uri[len("s3:/"):] for uri in chunks if uri not in first)}))
        thread, outcome = run_in_thread(spark, through(proxy, run_config),
                                        f"s3a://{BUCKET}/lost/in/", output, "lost-lease")
        try:
            deadline = time.monotonic() + 300
            while not (proxy.held and list(out_dir.glob("predictions/run_id=*/*.parquet"))):
                assert thread.is_alive() and time.monotonic() < deadline, outcome
                time.sleep(0.1)
            (lease_dir / ".lock").unlink()
            (lease_dir / ".lock").mkdir()
            time.sleep(3.0)  # past the 2 s the lease is held after its last renewal
        finally:
            proxy.release()
        with pytest.raises(JobError) as stopped:
            finished(thread, outcome, timeout_s=300)
    [run_id] = [path.name[len("run_id="):] for path in out_dir.glob("predictions/run_id=*")]
    line = str(stopped.value)
    assert line.startswith(f"run {run_id} lost its lease {output}/_leases/{MODEL}/all.json: "
                           f"not renewed for "), line
    assert re.search(STOP_CAUSES + re.escape(f"last renewal error: IsADirectoryError: [Errno 21] "
                                             f"Is a directory: '{lease_dir}/.lock'") + "$",
                     line), line
    committed = {row.uri for row in spark.read.parquet(f"{output}/predictions").collect()}
    assert committed == first  # nothing of the second chunk
    assert spark.read.parquet(f"{output}/dead_letter").count() == 0
    report = json.loads((out_dir / "_reports" / f"{run_id}.json").read_text())
    assert (report["status"], report["stop"]) == ("failed", line)
    assert (report["listed"], report["classified"], report["committed_predictions"],
            report["committed_dead_letters"], report["chunks"]) == \
        (len(objects), len(first), len(first), 0, 2)


def first_chunk_committed(s3, output_key: str) -> bool:
    """Whether a run under s3://BUCKET/`output_key` committed its dead letters (the last
    commit of a chunk): their `_SUCCESS` marker is there."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{output_key}/dead_letter/")
    return any(item["Key"].endswith("/_SUCCESS") for item in listed.get("Contents", []))


def test_a_run_whose_lease_is_taken_over_mid_run_stops_and_commits_nothing_after(
        spark, config, trained_model, s3, graph):
    """Run A (shard 0/2, two chunks of 4, TTL 3 s) reaches S3 through the fault proxy, where
    a read of its second chunk is held (A waits in the middle of that chunk). Once its first
    chunk is committed, its lease renewals are refused (403, as for an expired token), so its
    lease expires on the store; run B of an overlapping shard (0/4, `--resume`) is admitted, ends
    A's lease and classifies its shard's objects that A had not committed. Then A's reads go
    on: A stops before committing its second chunk, with the lease's one line, and neither
    predictions/ nor the graph hold anything of A's after B's takeover."""
    _, held_out = sample_images.digit_images(limit=96)
    assert len(held_out) == 16
    prefix = "midrun/"
    put_objects(s3, BUCKET, f"{prefix}in/", held_out)
    uris = [f"s3://{BUCKET}/{prefix}in/{key}" for key in held_out]
    shard_a = [uri for uri in uris if shard_of(uri, 2) == 0]
    chunk_of = {row["uri"]: row["chunk"] for row in spark.createDataFrame(
        [(uri,) for uri in shard_a], "uri string")
        .select("uri", F.pmod(F.xxhash64("uri"), F.lit(2)).alias("chunk")).collect()}
    first = {uri for uri in shard_a if chunk_of[uri] == 0}
    second = set(shard_a) - first
    shard_b = {uri for uri in uris if shard_of(uri, 4) == 0}
    assert (len(shard_a), len(first), len(second)) == (8, 4, 4)  # two chunks of 4
    assert (len(shard_b & first), len(shard_b & second), len(second - shard_b)) == (1, 3, 1)
    input_uri, output = f"s3a://{BUCKET}/{prefix}in/", f"s3a://{BUCKET}/{prefix}results"
    run_config = replace(config, run=replace(config.run, objects_per_chunk=4, lease_ttl_s=3.0))
    lease_key = f"{prefix}results/_leases/{MODEL}/0-of-2.json"
    with S3FaultProxy(config.s3.endpoint) as proxy:
        # one object of the second chunk waits: its task holds one slot, the first commits
        proxy.hold(frozenset({min(uri[len("s3:/"):] for uri in second)}))
        a, outcome = run_in_thread(spark, through(proxy, run_config), input_uri, output,
                                   "taken-over", Shard(0, 2))
        try:
            deadline = time.monotonic() + 300
            while not (proxy.held and first_chunk_committed(s3, f"{prefix}results")):
                assert a.is_alive() and time.monotonic() < deadline, outcome
                time.sleep(0.1)
            run_a_id = lease_files(output, s3)["0-of-2.json"]["run_id"]
            proxy.put_statuses = {f"/{BUCKET}/{lease_key}": 403}  # A's renewals refused
            time.sleep(4.5)  # 3 s after its last renewal, on the store's clock of whole seconds
            b = run_inference(spark, run_config, InputSource(PREFIX, input_uri), MODEL_URI,
                              output, shard=Shard(0, 4), resume=True)
            assert a.is_alive() and proxy.held  # A waited in its second chunk all along
            assert lease_files(output, s3) == {}  # B ended A's lease, then released its own
        finally:
            proxy.release()
            a.join(300)
        assert proxy.injected[403] > 0
    assert not a.is_alive()
    # B: its shard's objects less those A committed, once each; its report reconciles
    assert b.reconciles(), b.disagreements()
    assert (b.listed, b.skipped_done, b.classified, b.committed_predictions, b.dead_lettered,
            b.graph_written, b.graph_images) == (4, 1, 3, 3, 0, 3, 3)
    # predictions/: A's first chunk under A's run id, B's objects under B's, no object twice
    rows = spark.read.parquet(f"{output}/predictions").select("uri", "run_id").collect()
    assert sorted((row.uri, row.run_id) for row in rows) == sorted(
        [(uri, run_a_id) for uri in first] + [(uri, b.run_id) for uri in shard_b - first])
    assert spark.read.parquet(f"{output}/dead_letter").count() == 0
    # the graph: the same images, each classified by the run that committed it
    assert {image: runs[MODEL] for image, runs in runs_by_image(graph).items()
            if image.startswith(f"s3://{BUCKET}/{prefix}")} == {
        **{uri: {run_a_id} for uri in first}, **{uri: {b.run_id} for uri in shard_b - first}}
    with pytest.raises(JobError) as stopped:  # A stopped, with the lease's one line
        finished(a, outcome)
    line = str(stopped.value)
    assert "\n" not in line
    assert line.startswith(f"run {run_a_id} lost its lease {output}/_leases/{MODEL}/0-of-2.json: "
                           f"not renewed for "), line
    assert re.search(STOP_CAUSES + re.escape("last renewal error: ClientError: An error "
                                             "occurred (AccessDenied) when calling the PutObject "
                                             "operation: Access Denied") + "$", line), line
    # A's report: failed with its line, the first chunk only
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}results/_reports/"
                                      f"{run_a_id}.json")["Body"].read())
    assert (report["status"], report["stop"]) == ("failed", line)
    assert (report["listed"], report["classified"], report["committed_predictions"],
            report["committed_dead_letters"], report["chunks"]) == (8, 4, 4, 0, 2)
    assert lease_files(output, s3) == {}
