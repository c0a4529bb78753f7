"""A run's figures as CloudWatch metrics, where an EMR user's dashboards and alarms live.

The driver sends them with boto3 `put_metric_data`: after each committed chunk (that chunk's
images classified and committed, dead letters by reason class, graph requests and retries, its
duration and images per second) and once at the end of the run (the same totals from the run
report). Every datum carries the dimensions `Run`, `Shard` (`all` for a whole run) and `Model`;
dead letters also `ReasonClass`. Requests hold at most `MAX_DATA_PER_REQUEST` data (the API
takes 1,000).

CloudWatch is never on the run's critical path: the first failed send logs one warning line,
the run sends no more and goes on; a namespace of "" turns the metrics off (`metrics.cloudwatch`
false, the local default; conf/emr.yaml turns them on).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imagegraph.config import MetricsConfig, S3Config
from imagegraph.errors import JobError
from imagegraph.runs.report import images_per_s

log = logging.getLogger(__name__)

MAX_DATA_PER_REQUEST = 500
"""Data per put_metric_data request: under the API's 1,000 and its 1 MB payload."""

_CLIENT_CONFIG = BotoConfig(connect_timeout=5, read_timeout=10,
                            retries={"mode": "standard", "total_max_attempts": 3})
"""Short timeouts, few tries: an unreachable CloudWatch delays one commit by under a minute,
once (`RunMetrics` sends nothing more after a failure)."""


def reason_class(reason: str) -> str:
    """The class of a dead-letter `reason`: its text before the first ':' with each number as
    N (`corrupt or truncated JPEG data`, `read failed`, `object is N bytes, over the limit of
    N`), so that the classes, CloudWatch dimension values, are few."""
    head = re.sub(r"\d+", "N", reason.split(":", 1)[0].strip())
    return head or "other"


@dataclass(frozen=True)
class ChunkFigures:
    """What one committed chunk did: images classified and committed to predictions/
    (`classified`; those the graph refused are dead letters instead), dead letters by reason
    (reason -> count), graph requests and retries, and its duration in seconds."""

    classified: int
    dead_lettered_by_reason: dict[str, int]
    graph_requests: int
    graph_retries: int
    duration_s: float


class RunMetrics:
    """Sends one run's metrics to `namespace` through `client` (a boto3 CloudWatch client);
    does nothing when `namespace` is empty, nor after a send failed."""

    def __init__(self, client: Any, namespace: str, run_id: str, shard: str, model: str):
        self.client, self.namespace = client, namespace
        self.failed = False
        self.dimensions = [{"Name": "Run", "Value": run_id},
                           {"Name": "Shard", "Value": shard or "all"},
                           {"Name": "Model", "Value": model}]

    def chunk(self, figures: ChunkFigures) -> None:
        """The metrics of one committed chunk."""
        rate = images_per_s(figures.classified + sum(figures.dead_lettered_by_reason.values()),
                            figures.duration_s)
        self._send(self._data(figures.classified, figures.dead_lettered_by_reason,
                              figures.graph_requests, figures.graph_retries)
                   + [self._datum("ChunkDuration", figures.duration_s, "Seconds"),
                      self._datum("ImagesPerSecond", rate, "Count/Second")])

    def run(self, report: dict[str, Any]) -> None:
        """The run's totals from its report (`RunReport.to_dict()`; images classified are its
        `written`, the committed predictions read back), metric names prefixed `Run`."""
        data = self._data(int(report.get("written", 0)),
                          dict(report.get("dead_lettered_by_reason") or {}),
                          int(report.get("graph_requests", 0)),
                          int(report.get("graph_retries", 0)), prefix="Run")
        processed = int(report.get("listed", 0)) - int(report.get("skipped_done", 0))
        data.append(self._datum("RunImagesPerSecond",
                                images_per_s(processed, float(report.get("elapsed_s", 0.0))),
                                "Count/Second"))
        self._send(data)

    def _data(self, classified: int, dead: dict[str, int], requests: int, retries: int,
              prefix: str = "") -> list[dict[str, Any]]:
        by_class: dict[str, int] = {}
        for reason, count in dead.items():
            by_class[reason_class(reason)] = by_class.get(reason_class(reason), 0) + int(count)
        return ([self._datum(f"{prefix}ImagesClassified", classified, "Count"),
                 self._datum(f"{prefix}GraphRequests", requests, "Count"),
                 self._datum(f"{prefix}GraphRetries", retries, "Count"),
                 self._datum(f"{prefix}DeadLetters", sum(by_class.values()), "Count")]
                + [self._datum(f"{prefix}DeadLetters", count, "Count",
                               [{"Name": "ReasonClass", "Value": name}])
                   for name, count in sorted(by_class.items())])

    def _datum(self, name: str, value: float, unit: str,
               extra: list[dict[str, str]] | None = None) -> dict[str, Any]:
        return {"MetricName": name, "Value": float(value), "Unit": unit,
                "Dimensions": self.dimensions + (extra or [])}

    def _send(self, data: list[dict[str, Any]]) -> None:
        if not self.namespace or self.failed:
            return
        for start in range(0, len(data), MAX_DATA_PER_REQUEST):
            try:
                self.client.put_metric_data(Namespace=self.namespace,
                                            MetricData=data[start:start + MAX_DATA_PER_REQUEST])
            except (BotoCoreError, ClientError) as exc:
                self.failed = True
                log.warning("CloudWatch: %d metric(s) to %s not sent, nor any more of this "
                            "run's (the run goes on): %s", len(data) - start, self.namespace,
                            " ".join(str(exc).split()))
                return


def run_metrics(metrics: MetricsConfig, s3: S3Config, run_id: str, shard: str,
                model: str) -> RunMetrics:
    """The `RunMetrics` of one run: to CloudWatch in `metrics.namespace` when
    `metrics.cloudwatch`, at `s3.endpoint` (empty: AWS) with its keys (empty: boto3's default
    chain) in `metrics.region` (empty: the boto3 session's); else sending nothing. `JobError`
    when CloudWatch is on and no region is set."""
    if not metrics.cloudwatch:
        return RunMetrics(None, "", run_id, shard, model)
    region = metrics.region or boto3.session.Session().region_name
    if not region:
        raise JobError("metrics.cloudwatch is on but no region is set: set metrics.region or "
                       "AWS_DEFAULT_REGION, or metrics.cloudwatch=false")
    client = boto3.session.Session().client(
        "cloudwatch", endpoint_url=s3.endpoint or None, region_name=region,
        aws_access_key_id=s3.access_key or None, aws_secret_access_key=s3.secret_key or None,
        config=_CLIENT_CONFIG)
    return RunMetrics(client, metrics.namespace, run_id, shard, model)
