"""The CloudWatch data a run sends: names, units, dimensions, batching, and a failure that
only warns. The client records the requests (CloudWatch itself: tests/integration)."""
import logging

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from imagegraph.config import load_config
from imagegraph.errors import JobError
from imagegraph.runs.metrics import (
    MAX_DATA_PER_REQUEST,
    ChunkFigures,
    RunMetrics,
    reason_class,
    run_metrics,
)


class RecordingClient:
    def __init__(self):
        self.requests = []

    def put_metric_data(self, Namespace, MetricData):
        self.requests.append((Namespace, MetricData))


class RefusingClient:
    def __init__(self, error=None):
        self.error = error or EndpointConnectionError(endpoint_url="https://monitoring.example")
        self.calls = 0

    def put_metric_data(self, Namespace, MetricData):
        self.calls += 1
        raise self.error


DIMENSIONS = [{"Name": "Run", "Value": "r1"}, {"Name": "Shard", "Value": "3/8"},
              {"Name": "Model", "Value": "digits@v1"}]


def test_a_chunk_sends_counts_dead_letters_by_class_rate_and_duration():
    client = RecordingClient()
    RunMetrics(client, "imagegraph", "r1", "3/8", "digits@v1").chunk(ChunkFigures(
        classified=90, dead_lettered_by_reason={"decode: truncated file": 2,
                                                "decode: unknown format": 3,
                                                "read: AccessDenied": 1},
        graph_requests=7, graph_retries=2, duration_s=30.0))
    [(namespace, data)] = client.requests
    assert namespace == "imagegraph"
    sent = {(d["MetricName"], tuple(x["Value"] for x in d["Dimensions"][3:])): (d["Value"],
                                                                                d["Unit"])
            for d in data}
    assert sent == {("ImagesClassified", ()): (90.0, "Count"),
                    ("GraphRequests", ()): (7.0, "Count"),
                    ("GraphRetries", ()): (2.0, "Count"),
                    ("DeadLetters", ()): (6.0, "Count"),
                    ("DeadLetters", ("decode",)): (5.0, "Count"),
                    ("DeadLetters", ("read",)): (1.0, "Count"),
                    ("ChunkDuration", ()): (30.0, "Seconds"),
                    ("ImagesPerSecond", ()): (3.2, "Count/Second")}  # (90 + 6) / 30 s
    assert all(d["Dimensions"][:3] == DIMENSIONS for d in data)


def test_run_totals_come_from_the_report_and_a_whole_run_is_shard_all():
    client = RecordingClient()
    RunMetrics(client, "ns", "r1", "", "digits@v1").run(
        {"classified": 41, "written": 40, "dead_lettered_by_reason": {}, "graph_requests": 3,
         "graph_retries": 0, "listed": 50, "skipped_done": 10, "elapsed_s": 20.0})
    [(_, data)] = client.requests
    assert {d["MetricName"]: d["Value"] for d in data} == {
        "RunImagesClassified": 40.0, "RunGraphRequests": 3.0, "RunGraphRetries": 0.0,
        "RunDeadLetters": 0.0, "RunImagesPerSecond": 2.0}
    assert data[0]["Dimensions"][1] == {"Name": "Shard", "Value": "all"}


def test_many_reason_classes_are_sent_in_requests_within_the_limit():
    client = RecordingClient()
    reasons = {f"class {''.join(chr(ord('a') + int(d)) for d in str(n))}: x": 1
               for n in range(MAX_DATA_PER_REQUEST + 10)}
    RunMetrics(client, "ns", "r", "", "m@v").chunk(ChunkFigures(1, reasons, 0, 0, 1.0))
    sizes = [len(data) for _, data in client.requests]
    assert sizes == [MAX_DATA_PER_REQUEST, MAX_DATA_PER_REQUEST + 10 + 6 - MAX_DATA_PER_REQUEST]


def test_no_namespace_sends_nothing_and_a_refused_send_only_warns(caplog):
    client = RecordingClient()
    RunMetrics(client, "", "r", "", "m@v").chunk(ChunkFigures(1, {}, 0, 0, 1.0))
    assert client.requests == []
    with caplog.at_level(logging.WARNING, logger="imagegraph.runs.metrics"):
        RunMetrics(RefusingClient(), "ns", "r", "", "m@v").chunk(ChunkFigures(1, {}, 0, 0, 1.0))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "CloudWatch"]
    assert ("6 metric(s) to ns not sent, nor any more of this run's (the run goes on)"
            in caplog.records[0].getMessage())


def test_a_refused_send_warns_once_and_the_run_sends_nothing_more(caplog):
    denied = ClientError({"Error": {"Code": "AccessDenied",
                                    "Message": "not authorized to perform: "
                                               "cloudwatch:PutMetricData"}}, "PutMetricData")
    client = RefusingClient(denied)
    metrics = RunMetrics(client, "imagegraph", "r", "0/2", "m@v")
    with caplog.at_level(logging.WARNING, logger="imagegraph.runs.metrics"):
        metrics.chunk(ChunkFigures(5, {"decode: x": 1}, 2, 0, 1.0))
        metrics.chunk(ChunkFigures(5, {}, 2, 0, 1.0))
        metrics.run({"written": 10, "listed": 11, "elapsed_s": 3.0})
    assert client.calls == 1
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        "CloudWatch: 7 metric(s) to imagegraph not sent, nor any more of this run's (the run "
        "goes on): An error occurred (AccessDenied) when calling the PutMetricData operation: "
        "not authorized to perform: cloudwatch:PutMetricData")


def test_metrics_off_need_no_client_and_on_need_a_region(monkeypatch):
    off = run_metrics(load_config(None).metrics, load_config(None).s3, "r", "", "m@v")
    assert (off.client, off.namespace) == (None, "")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    config = load_config(None, {"metrics.cloudwatch": True})
    with pytest.raises(JobError, match="metrics.cloudwatch is on but no region is set"):
        run_metrics(config.metrics, config.s3, "r", "", "m@v")
    config = load_config(None, {"metrics.cloudwatch": True, "metrics.region": "eu-west-1",
                                "s3.endpoint": "http://127.0.0.1:9"})
    on = run_metrics(config.metrics, config.s3, "r", "", "m@v")
    assert (on.namespace, on.client.meta.region_name, on.client.meta.endpoint_url) == (
        "imagegraph", "eu-west-1", "http://127.0.0.1:9")


def test_reason_class_is_the_text_before_the_first_colon_with_numbers_as_n():
    assert [reason_class(r) for r in ("decode: truncated", "graph:x:y", ": odd", "plain",
                                      "object is 60000123 bytes, over the limit of 50000000",
                                      "read failed: 503")] == [
        "decode", "graph", "other", "plain", "object is N bytes, over the limit of N",
        "read failed"]
