"""What a run shows besides its counts: each committed chunk's figures (the report's
`chunk_figures`, and CloudWatch metrics), and once the run is read back, the committed
predictions by top-1 class (`top1_by_class`), the run's metrics and its picture,
`<output>/_reports/<run_id>.png` beside the report.

A chunk's duration is the time from the previous chunk's commit (for the first chunk, from the
start of its classification) to its own commit: chunks are pipelined, so these intervals add up
to the run's chunk work without counting any second twice. `committed_at` is the commit's
wall-clock time (ISO-8601, UTC), where a backfill's picture places the chunk's objects.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from imagegraph.runs.metrics import ChunkFigures, RunMetrics
from imagegraph.runs.picture import draw_run
from imagegraph.runs.report import RunReport
from imagegraph.storage import hadoop_fs
from imagegraph.storage.outputs import PREDICTIONS_DIR, run_rows_uri


class RunFigures:
    """Records `report`'s chunks and ending, sending them through `metrics`. Make it when
    the chunks are about to start; call `chunk_committed` after each commit (commits run one
    at a time, the only writer of the report meanwhile) and `finish` once the report's counts
    and `elapsed_s` are final, before it is written."""

    def __init__(self, report: RunReport, metrics: RunMetrics):
        self.report, self.metrics = report, metrics
        self._since = time.monotonic()
        self._before = _counts(report)

    def chunk_committed(self, index: int) -> None:
        """Chunk `index` was committed: its figures are what the report counted since the
        previous one."""
        now, after = time.monotonic(), _counts(self.report)
        classified, failed, dead, requests, retries = self._before
        by_reason = {reason: count - dead.get(reason, 0) for reason, count in after[2].items()
                     if count != dead.get(reason, 0)}
        figures = ChunkFigures(classified=after[0] - classified - (after[1] - failed),
                               dead_lettered_by_reason=by_reason,
                               graph_requests=after[3] - requests,
                               graph_retries=after[4] - retries, duration_s=now - self._since)
        self.report.chunk_figures.append({"index": index, **asdict(figures),
                                          "dead_lettered": sum(by_reason.values()),
                                          "committed_at": datetime.now(timezone.utc).isoformat()})
        self.metrics.chunk(figures)
        self._since, self._before = now, after

    def finish(self, spark: SparkSession) -> None:
        """Count the committed predictions by top-1 class into the report, send the run's
        metrics, and write its picture (`picture_uri`)."""
        report = self.report
        if report.committed_predictions:
            rows = (spark.read.schema("labels array<string>")
                    .parquet(run_rows_uri(report.output_uri, PREDICTIONS_DIR, report.run_id))
                    .groupBy(F.element_at("labels", 1).alias("top1")).count().collect())
            report.top1_by_class = {row["top1"]: row["count"] for row in rows}
        report.picture_uri = report.report_uri.removesuffix(".json") + ".png"
        data = report.to_dict()
        self.metrics.run(data)
        hadoop_fs.write_bytes(spark, report.picture_uri, draw_run(data))


def _counts(report: RunReport) -> tuple[int, int, dict[str, int], int, int]:
    """(classified, graph failed, dead letters by reason, graph requests, graph retries)."""
    return (report.classified, report.graph_failed, dict(report.dead_lettered_by_reason),
            report.graph_requests, report.graph_retries)
