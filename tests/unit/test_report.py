import logging
from types import SimpleNamespace

import pytest

from imagegraph.runs.progress import ProgressLogger
from imagegraph.runs.report import RunReport, images_per_s


def report(**counts) -> RunReport:
    return RunReport(run_id="r", source="s3://b/in/", output_uri="out", model="m@1", **counts)


def reconciled(**changes) -> RunReport:
    """12 listed: 2 skipped, 8 classified (7 written, 1 refused by the graph), 2 empty."""
    counts = dict(listed=12, skipped_done=2, classified=8, graph_written=7, graph_failed=1,
                  dead_lettered_by_reason={"empty object (0 bytes)": 2, "graph write failed": 1},
                  committed_predictions=7, committed_dead_letters=3, graph_images=7)
    return report(**{**counts, **changes})


def test_reconciles_when_every_object_is_accounted_for():
    done = reconciled()
    assert done.dead_lettered == 3 and done.written == 7 and done.processed == 10
    assert done.reconciles() and done.disagreements() == []
    assert done.failed_fraction == 0.3
    assert done.to_dict()["reconciled"] is True
    assert (
        "  reconciled           yes: listed 12 = written 7 + dead-lettered 3 + skipped 2"
        in done.summary_lines())


@pytest.mark.parametrize("changes, disagreement", [
    ({"listed": 13},
     "listed = committed predictions + committed dead letters + skipped: 13 != 12"),
    ({"skipped_done": 1},
     "listed = committed predictions + committed dead letters + skipped: 12 != 11"),
    ({"committed_predictions": 6, "graph_images": 6},
     "committed predictions = classified - graph failed: 6 != 7"),
    ({"committed_dead_letters": 2},
     "committed dead letters = dead-lettered: 2 != 3"),
    ({"graph_written": 6},
     "classified = graph written + graph failed: 8 != 7"),
    ({"graph_images": 6},
     "committed predictions <= graph image vertices of the run <= committed predictions + "
     "graph failed: 7 <= 6 <= 8 does not hold"),
    ({"graph_images": 9},
     "committed predictions <= graph image vertices of the run <= committed predictions + "
     "graph failed: 7 <= 9 <= 8 does not hold"),
])
def test_each_term_that_disagrees_is_named(changes, disagreement):
    """Each term is counted on its own, so any one of them off by one breaks reconciliation,
    and the report says which equation failed."""
    off = reconciled(**changes)
    assert disagreement in off.disagreements()
    assert not off.reconciles() and off.to_dict()["reconciled"] is False
    assert f"    disagrees: {disagreement}" in off.summary_lines()
    assert "reconciled           NO" in "\n".join(off.summary_lines())


def test_a_refused_rows_vertex_may_carry_the_run_id():
    assert reconciled(graph_images=8).reconciles()


def test_graph_off_counts_predictions_as_written():
    off = report(listed=3, classified=3, graph_enabled=False, committed_predictions=3)
    assert off.written == 3 and off.reconciles()
    assert "  written              3 (graph writes off)" in off.summary_lines()
    assert off.summary_lines()[-1] == "  graph                off (no graph writes)"
    assert not report(listed=3, classified=3, graph_enabled=False,
                      committed_predictions=2).reconciles()


def test_nothing_processed_is_not_a_failure():
    assert report(listed=5, skipped_done=5).failed_fraction == 0.0


def test_summary_lines_and_json_word_for_word():
    done = reconciled(shard="1/4", resume=True, dead_lettered_by_reason={
        "empty object (0 bytes)": 2, "graph write failed": 1}, elapsed_s=4.0, chunks=2,
        graph_endpoint="ws://g:8182/gremlin", report_uri="out/_reports/r.json",
        picture_uri="out/_reports/r.png", model_ran_s=3.0, model_waited_s=9.0)
    assert done.summary_lines() == [
        "run r: s3://b/in/, shard 1/4 -> out with m@1",
        "  objects listed       12",
        "  skipped as done      2",
        "  classified           8",
        "  dead-lettered        3",
        "         2  empty object (0 bytes)",
        "         1  graph write failed",
        "  written to graph     7 images (0 vertices, 0 edges, 0 requests, 0 retries); 7 read "
        "back",
        "  elapsed              4.0 s (2.5 images/s, 2 chunk(s))",
        "  model                3.0 task-s classifying, 9.0 waiting for reads and decodes (75%)",
        "  reconciled           yes: listed 12 = written 7 + dead-lettered 3 + skipped 2",
        "  predictions          out/predictions/run_id=r",
        "  dead letters         out/dead_letter/run_id=r",
        "  graph                ws://g:8182/gremlin",
        "  report               out/_reports/r.json",
        "  picture              out/_reports/r.png"]
    assert report(listed=0).summary_lines()[:3] == [
        "run r: s3://b/in/ -> out with m@1", "  objects listed       0",
        "  skipped as done      0 (no --resume)"]
    assert report(listed=4, skipped_done=3, skipped_out_of_attempts=1,
                  resume=True).summary_lines()[2] == (
        "  skipped as done      3 (1 out of attempts)")
    derived = {key: value for key, value in done.to_dict().items()
               if key not in {f for f in done.__dataclass_fields__}}
    assert derived == {"written": 7, "dead_lettered": 3, "failed_fraction": 0.3,
                       "model_waited_fraction": 0.75, "reconciled": True, "disagreements": []}
    assert not any(line.startswith("  model ") for line in reconciled().summary_lines())
    assert reconciled().model_waited_fraction == 0.0  # no model time: a run with nothing to do


def test_the_unknowns_are_counted_among_the_classified_with_a_threshold():
    assert reconciled(unknown=3, min_score=0.5).summary_lines()[3] == (
        "  classified           8 (3 unknown: best score under 0.5)")
    assert reconciled(unknown=3, min_score=0.5).reconciles()  # unknowns are written


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counter:
    def __init__(self, value: int):
        self.value = value


@pytest.mark.parametrize("progress_from, at, done, rate", [
    (0.0, 200.0, 100, "0.5"),     # the progress thread from the run's start
    (100.0, 200.0, 100, "0.5"),   # ... or from after the listing: still the run's clock
    (150.0, 150.0, 0, "0.0"),
    (30.0, 40.0, 1000, "25.0"),
])
def test_the_progress_line_and_the_summary_give_the_same_images_per_s(
        caplog, progress_from, at, done, rate):
    """One figure, `images_per_s`: objects processed per second since the run started, in
    the last progress line as in the summary, whenever the progress thread began."""
    clock = Clock()
    started = clock()
    clock.now = progress_from
    counters = SimpleNamespace(processed=Counter(done), failed=Counter(0))
    progress = ProgressLogger(counters, done or 1, 60.0, started, clock)
    clock.now = at
    with caplog.at_level(logging.INFO, logger="imagegraph.runs.progress"):
        progress.log()
    finished = report(listed=done, classified=done, elapsed_s=at - started)
    assert f", {rate} images/s, " in caplog.messages[-1]
    assert f" s ({rate} images/s, " in "\n".join(finished.summary_lines())
    assert f"{images_per_s(done, at - started):.1f}" == rate
