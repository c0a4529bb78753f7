"""IAM authentication that a test can see fail: the job's graph writers (the driver's startup
write, `write_model`, and a partition's writer, `write_partition`) with `graph.iam_auth=on` and
credentials from boto3's default chain, against Gremlin Server behind dev/sigv4_gate.py, which
relays only handshakes whose SigV4 signature it recomputes (botocore, service neptune-db,
region us-east-1) from the test's credentials, and refuses any other as Neptune does (403,
AccessDeniedException)."""
from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials
from sigv4_gate import MISMATCH, SigV4Gate

from imagegraph.cli import run_job
from imagegraph.errors import JobError
from imagegraph.graph import query
from imagegraph.graph.load import count_run_images, write_model
from imagegraph.graph.writer import write_partition
from imagegraph.model.artifact import ModelMetadata

ACCESS_KEY = "AKIDIAMGATETEST00001"
SECRET_KEY = "IamGateSecret0123456789abcdefghijKLMNOPQ"
SESSION_TOKEN = "IamGateSessionToken0123456789abcdef"
REGION = "us-east-1"
METADATA = ModelMetadata(name="iam", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b"))


def prediction(n: int) -> dict:
    return {"uri": f"s3://iam/img{n}.png", "bucket": "iam", "key": f"img{n}.png",
            "bytes": 100 + n, "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": ["a", "b"], "scores": [0.7, 0.2]}


@pytest.fixture
def gate(endpoints, graph):
    """The gate in front of the test Gremlin Server, on an emptied graph."""
    graph.V().drop().iterate()
    gremlin = urlsplit(endpoints.gremlin_endpoint)
    with SigV4Gate(gremlin.hostname, gremlin.port,
                   Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), REGION) as gate:
        yield gate


def signed_through(gate: SigV4Gate, config, monkeypatch, secret_key: str):
    """`config.graph` through `gate`, signed, with boto3's chain holding `secret_key`."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    return replace(config.graph, endpoint=f"ws://127.0.0.1:{gate.port}/gremlin",
                   iam_auth="on", region=REGION, rows_per_flush=4, max_attempts=2,
                   retry_base_delay_s=0.01)


def test_signed_writes_are_let_in_and_land(gate, graph, config, monkeypatch, caplog):
    signed = signed_through(gate, config, monkeypatch, SECRET_KEY)
    caplog.set_level("DEBUG")
    write_model(signed, METADATA)
    writer = write_partition([prediction(n) for n in range(10)], signed, METADATA.tag,
                             "run-iam")
    assert writer.stopped == "" and writer.failed == {}
    assert writer.stats.rows_written == 10
    assert gate.refusals == [] and gate.accepted >= 2  # the driver's and the writer's
    # read back unsigned, past the gate: exactly what was written
    assert set(graph.V().has_label("image").id_().to_list()) == {
        f"s3://iam/img{n}.png" for n in range(10)}
    assert graph.V().has_label("model").id_().to_list() == [f"model:{METADATA.tag}"]
    assert graph.E().has("classified_as", "run_id", "run-iam").out_v().dedup().count() \
        .next() == 10
    assert graph.E().has_label("classified_as").count().next() == 20
    assert SECRET_KEY not in caplog.text and SESSION_TOKEN not in caplog.text


def test_a_wrong_secret_is_refused_and_stops_the_writers(gate, graph, config, monkeypatch):
    signed = signed_through(gate, config, monkeypatch, SECRET_KEY[:-1] + "X")
    with pytest.raises(JobError) as probe:
        write_model(signed, METADATA)
    writer = write_partition([prediction(n) for n in range(10)], signed, METADATA.tag,
                             "run-iam")
    for line in (str(probe.value), writer.stopped):
        assert "\n" not in line
        assert line.startswith(f"graph writes to {signed.endpoint} stopped: permission denied "
                               "(HTTP 403"), line
        assert "check the IAM policy" in line
    assert gate.accepted == 0 and gate.refusals == [MISMATCH, MISMATCH]  # no retry of a 403
    assert writer.stats.rows_written == 0 and writer.failed == {}  # left for --resume
    assert graph.V().count().next() == 0


def test_credentials_refused_after_the_load_stop_the_read_back_and_query_with_one_line(
        gate, graph, config, monkeypatch, capsys):
    """The load is let in; then the role's credentials stop being accepted (a 403 at every
    handshake): the run's read-back and the query command say so in the writers' one line and
    exit 2, not with a traceback."""
    signed = signed_through(gate, config, monkeypatch, SECRET_KEY)
    write_model(signed, METADATA)
    writer = write_partition([prediction(n) for n in range(10)], signed, METADATA.tag,
                             "run-iam")
    uris = [f"s3://iam/img{n}.png" for n in range(10)]
    assert writer.stats.rows_written == 10
    assert count_run_images(signed, "run-iam", uris) == 10
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY[:-1] + "X")
    with pytest.raises(JobError) as read_back:
        count_run_images(signed, "run-iam", uris)
    line = str(read_back.value)
    assert "\n" not in line and "check the IAM policy" in line
    assert line.startswith(f"graph reads to {signed.endpoint} stopped: permission denied "
                           "(HTTP 403"), line
    code = run_job(query.PROG, lambda: query.main([
        "--gremlin-endpoint", signed.endpoint, "--set", "graph.iam_auth=on",
        "--set", f"graph.region={REGION}", "run", "run-iam"]))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"graph reads to {signed.endpoint} stopped: permission denied (HTTP 403" in err
