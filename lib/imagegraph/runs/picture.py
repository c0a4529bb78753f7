"""A picture of one run, drawn from its report and written beside it as
`<output>/_reports/<run_id>.png`: images per second chunk by chunk, dead letters by reason
class, the top-1 class distribution, and the graph's requests and retries per chunk; and a
picture of a whole backfill over wall-clock time, drawn from `runs.status.BackfillTimeline`.

The report's `chunk_figures` (one dict[str, Any] per committed chunk: `index`, `classified`,
`dead_lettered`, `duration_s`, `graph_requests`, `graph_retries`; `runs.figures` records them)
and `top1_by_class` (class -> images) are what the panels show.
"""
from __future__ import annotations

import io
from typing import Any

from imagegraph.runs.metrics import reason_class
from imagegraph.runs.report import images_per_s
from imagegraph.runs.status import DONE, FAILED, RUNNING, BackfillTimeline

OUTCOME_COLOURS = {DONE: "tab:green", FAILED: "tab:red", RUNNING: "tab:blue"}


def _pyplot() -> Any:
    """matplotlib's pyplot, drawing off screen."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _png(figure: Any) -> bytes:
    """`figure` laid out and saved as PNG bytes; the figure is closed."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()


def draw_run(report: dict[str, Any]) -> bytes:
    """The PNG (bytes) of `report` (`RunReport.to_dict()`): four panels, 1200x800 pixels."""
    plt = _pyplot()
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
    return _png(figure)


def draw_backfill(timeline: BackfillTimeline) -> bytes:
    """The PNG (bytes) of `timeline`, 1200x800 pixels: above, one row per shard with each
    run's span coloured by its outcome; below, the objects finished over time against those
    listed, and the estimated end."""
    figure, (shards, finished) = _pyplot().subplots(
        2, 1, figsize=(12, 8), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    models = {model for model, _ in timeline.rows}
    labels = [shard if len(models) == 1 else f"{model} {shard}" for model, shard in timeline.rows]
    for span in timeline.spans:
        shards.barh(timeline.rows.index((span.model, span.shard)), span.end - span.start,
                    left=span.start, height=0.8, color=OUTCOME_COLOURS[span.outcome],
                    edgecolor="black")
    shards.set(title=f"backfill by shard ({', '.join(sorted(models))}), as of "
                     f"{timeline.now:%Y-%m-%d %H:%M:%S} UTC",
               yticks=range(len(labels)), yticklabels=labels, ylim=(len(labels) - 0.5, -0.5))
    shards.legend(handles=[_pyplot().Rectangle((0, 0), 1, 1, color=colour, label=outcome)
                           for outcome, colour in OUTCOME_COLOURS.items()], loc="upper right")

    so_far, last_end = timeline.finished[-1][1], max(span.end for span in timeline.spans)
    finished.step([when for when, _ in timeline.finished] + [last_end],
                  [objects for _, objects in timeline.finished] + [so_far], where="post",
                  label=f"finished ({so_far})")
    unlisted = (f", {timeline.unlisted_shards} shard(s) not listed yet"
                if timeline.unlisted_shards else "")
    finished.axhline(timeline.listed, color="grey", linestyle=":",
                     label=f"listed ({timeline.listed}{unlisted})")
    if timeline.estimated_end is not None:
        finished.plot([timeline.now, timeline.estimated_end],
                      [so_far, timeline.listed], linestyle="--",
                      label=f"estimated end {timeline.estimated_end:%Y-%m-%d %H:%M} UTC")
    finished.set(title="objects finished (committed predictions and dead letters)",
                 xlabel="time (UTC)", ylabel="objects",
                 ylim=(0, 1.25 * max(timeline.listed, so_far, 1)))
    finished.legend(loc="upper left")
    return _png(figure)
