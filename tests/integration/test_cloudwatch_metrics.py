"""A run with CloudWatch metrics on, against the session's moto server (which answers
CloudWatch on its S3 endpoint): the metrics read back add up to the report's counts with the
run, shard and model dimensions, and the run's picture is beside its report. The Spark UI's
address is logged when a local session starts with the UI on."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import sample_images
from conftest import BUCKET, MODEL_URI
from PIL import Image
from s3_objects import put_objects

from imagegraph.infer.job import run_inference
from imagegraph.runs.metrics import reason_class
from imagegraph.storage.selection import PREFIX, InputSource, Shard, shard_of

OUT = f"s3a://{BUCKET}/metrics-out"
NAMESPACE = "imagegraph-test"
SHARD = Shard(0, 2)


@pytest.fixture(scope="module")
def metered_run(spark, config, trained_model, s3, endpoints):
    """Shard 0/2 of 30 digits and 6 truncated JPEGs classified in chunks of 6 (graph off),
    metrics on; yields (the report, a CloudWatch client on the moto server)."""
    digits, _ = sample_images.digit_images(limit=30)
    broken = next(iter(sample_images.corrupt_image().values()))
    put_objects(s3, BUCKET, "metered/", {**digits,
                                         **{f"broken/{n}.jpg": broken for n in range(6)}})
    run_config = replace(config, graph=replace(config.graph, enabled=False),
                         run=replace(config.run, objects_per_chunk=6),
                         metrics=replace(config.metrics, cloudwatch=True, namespace=NAMESPACE))
    report = run_inference(spark, run_config, InputSource(PREFIX, f"s3a://{BUCKET}/metered/"),
                           MODEL_URI, OUT, SHARD)
    env = endpoints.env()
    cloudwatch = boto3.client("cloudwatch", endpoint_url=env["S3_ENDPOINT"],
                              region_name=config.metrics.region,
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return report, cloudwatch


def total(cloudwatch, report, name: str, *extra: dict) -> float:
    """The sum of metric `name` of `report`'s run, shard and model over the last hour."""
    now = datetime.now(timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE, MetricName=name, StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5), Period=7200, Statistics=["Sum"],
        Dimensions=[{"Name": "Run", "Value": report.run_id},
                    {"Name": "Shard", "Value": str(SHARD)},
                    {"Name": "Model", "Value": report.model}, *extra])["Datapoints"]
    return sum(point["Sum"] for point in points)


def test_the_metrics_add_up_to_the_reports_counts(metered_run):
    report, cloudwatch = metered_run
    assert report.reconciles() and report.chunks >= 2 and report.written > 0
    assert report.dead_lettered == sum(
        1 for n in range(6) if shard_of(f"s3://{BUCKET}/metered/broken/{n}.jpg", 2) == 0) > 0
    assert total(cloudwatch, report, "ImagesClassified") == report.written
    assert total(cloudwatch, report, "RunImagesClassified") == report.written
    # moto's statistics match every datum whose dimensions include those asked for, so the
    # total DeadLetters (no ReasonClass) is not asked there; its dimension sets are listed (as
    # a set: moto lists a set of more dimensions once per datum)
    [decode] = {reason_class(reason) for reason in report.dead_lettered_by_reason}
    assert decode == "unreadable image header"
    assert total(cloudwatch, report, "DeadLetters",
                 {"Name": "ReasonClass", "Value": decode}) == report.dead_lettered
    dimensions = {"Run": report.run_id, "Shard": "0/2", "Model": report.model}
    for name, sets in (("ImagesClassified", [dimensions]),
                       ("DeadLetters", [dimensions, {**dimensions, "ReasonClass": decode}])):
        listed = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=name)["Metrics"]
        assert {frozenset((d["Name"], d["Value"]) for d in metric["Dimensions"])
                for metric in listed} == {frozenset(each.items()) for each in sets}
    assert [c["index"] for c in report.chunk_figures] == list(range(report.chunks))
    assert sum(c["classified"] for c in report.chunk_figures) == report.written
    assert sum(report.top1_by_class.values()) == report.written


def test_the_picture_is_beside_the_report_and_in_the_summary(metered_run, s3):
    report, _ = metered_run
    key = f"metrics-out/_reports/{report.run_id}"
    assert report.picture_uri == f"{OUT}/_reports/{report.run_id}.png"
    image = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"{key}.png")["Body"].read()))
    assert (image.format, image.size) == ("PNG", (1200, 800))
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{key}.json")["Body"].read())
    assert (stored["picture_uri"], stored["top1_by_class"], stored["chunk_figures"]) == (
        report.picture_uri, report.top1_by_class, report.chunk_figures)
    assert f"  picture              {report.picture_uri}" in report.summary_lines()


def test_a_local_session_with_the_ui_on_logs_its_address():
    script = ("import logging; logging.basicConfig(level=logging.INFO)\n"
              "from imagegraph.config import load_config\n"
              "from imagegraph.spark_session import get_spark\n"
              "get_spark(load_config(None, {'spark.conf': {'spark.master': 'local[1]', "
              "'spark.ui.enabled': True, 'spark.ui.port': 0}})).stop()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "Spark UI at " in line]
    assert len(lines) == 1 and lines[0].split("Spark UI at ")[1].startswith("http://"), \
        done.stderr
