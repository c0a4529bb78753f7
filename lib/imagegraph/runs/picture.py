"""A picture of one run, drawn from its report and written beside it as
`<output>/_reports/<run_id>.png`: images per second chunk by chunk, dead letters by reason
class, the top-1 class distribution, and the graph's requests and retries per chunk.

The report's `chunk_figures` (one dict[str, Any] per committed chunk: `index`, `classified`,
`dead_lettered`, `duration_s`, `graph_requests`, `graph_retries`; `runs.figures` records them)
and `top1_by_class` (class -> images) are what the panels show.
"""
from __future__ import annotations

import io
from typing import Any

from imagegraph.runs.metrics import reason_class
from imagegraph.runs.report import images_per_s


def draw_run(report: dict[str, Any]) -> bytes:
    """The PNG (bytes) of `report` (`RunReport.to_dict()`): four panels, 1200x800 pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    chunks = list(report.get("chunk_figures") or [])
    figure, ((rate, dead), (classes, graph)) = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    figure.suptitle(f"run {report.get('run_id', '')}: {report.get('model', '')}"
                    + (f", shard {report['shard']}" if report.get("shard") else ""))
    numbers = [c["index"] + 1 for c in chunks]
    rate.bar(numbers, [images_per_s(c["classified"] + c["dead_lettered"], c["duration_s"])
                       for c in chunks])
    rate.set(title="images per second, by chunk", xlabel="chunk", ylabel="images/s",
             xticks=numbers)

    by_class: dict[str, int] = {}
    for reason, count in (report.get("dead_lettered_by_reason") or {}).items():
        by_class[reason_class(reason)] = by_class.get(reason_class(reason), 0) + int(count)
    dead.barh(list(by_class) or ["none"], list(by_class.values()) or [0])
    dead.set(title=f"dead letters by reason class ({sum(by_class.values())})", xlabel="objects")

    top1 = sorted((report.get("top1_by_class") or {}).items(), key=lambda kv: -kv[1])[:20]
    classes.bar([name for name, _ in top1], [count for _, count in top1])
    classes.set(title="top-1 class (20 most frequent)", ylabel="images")
    classes.tick_params(axis="x", labelrotation=60)

    graph.bar([n - 0.2 for n in numbers], [c.get("graph_requests", 0) for c in chunks],
              width=0.4, label="requests")
    graph.bar([n + 0.2 for n in numbers], [c.get("graph_retries", 0) for c in chunks],
              width=0.4, label="retries")
    graph.set(title="graph requests and retries, by chunk", xlabel="chunk", xticks=numbers)
    graph.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
