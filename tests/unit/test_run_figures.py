"""A chunk's figures are what the report counted since the previous commit: images committed
(classified less those the graph refused), dead letters by reason, graph requests and retries."""
from datetime import datetime, timezone

from imagegraph.runs.figures import RunFigures
from imagegraph.runs.metrics import RunMetrics
from imagegraph.runs.report import RunReport


class RecordingClient:
    def __init__(self):
        self.data = []

    def put_metric_data(self, Namespace, MetricData):
        self.data += MetricData


def test_each_committed_chunk_records_what_the_report_counted_since_the_last():
    report = RunReport(run_id="r", source="s", output_uri="o", model="m@v",
                       graph_requests=2, graph_retries=1)  # the model's own elements
    client = RecordingClient()
    figures = RunFigures(report, RunMetrics(client, "ns", "r", "", "m@v"))
    report.classified, report.graph_failed, report.graph_requests = 10, 2, 7
    report.dead_lettered_by_reason = {"decode: truncated": 1, "graph: refused": 2}
    figures.chunk_committed(0)
    report.classified, report.graph_requests, report.graph_retries = 15, 9, 4
    report.dead_lettered_by_reason = {"decode: truncated": 3, "graph: refused": 2}
    figures.chunk_committed(1)
    timed = ("duration_s", "committed_at")
    assert [{k: v for k, v in c.items() if k not in timed} for c in report.chunk_figures] == [
        {"index": 0, "classified": 8, "dead_lettered": 3, "graph_requests": 5,
         "graph_retries": 0,
         "dead_lettered_by_reason": {"decode: truncated": 1, "graph: refused": 2}},
        {"index": 1, "classified": 5, "dead_lettered": 2, "graph_requests": 2,
         "graph_retries": 3, "dead_lettered_by_reason": {"decode: truncated": 2}}]
    assert all(c["duration_s"] >= 0 for c in report.chunk_figures)
    committed = [datetime.fromisoformat(c["committed_at"]) for c in report.chunk_figures]
    assert committed[0].tzinfo == timezone.utc and committed[0] <= committed[1]
    assert sum(d["Value"] for d in client.data if d["MetricName"] == "ImagesClassified") == \
        report.classified - report.graph_failed
