"""The run's and the backfill's pictures are PNGs of their figures (looked at once by eye;
here their form)."""
import io
from datetime import datetime, timedelta, timezone

from PIL import Image

from imagegraph.runs.picture import draw_backfill, draw_run
from imagegraph.runs.status import DONE, FAILED, RUNNING, BackfillTimeline, RunSpan

REPORT = {"run_id": "20261206T080000Z-abc123", "model": "digits@v1", "shard": "0/2",
          "dead_lettered_by_reason": {"decode: truncated": 2, "read: AccessDenied": 1},
          "top1_by_class": {"3": 10, "7": 4},
          "chunk_figures": [{"index": 0, "classified": 90, "dead_lettered": 3,
                             "duration_s": 30.0, "graph_requests": 7, "graph_retries": 1},
                            {"index": 1, "classified": 60, "dead_lettered": 0,
                             "duration_s": 20.0, "graph_requests": 5, "graph_retries": 0}]}


def test_a_run_is_drawn_as_a_1200_by_800_png():
    image = Image.open(io.BytesIO(draw_run(REPORT)))
    assert (image.format, image.size) == ("PNG", (1200, 800))


def test_a_report_without_chunks_or_classes_still_draws():
    image = Image.open(io.BytesIO(draw_run({"run_id": "r", "model": "m@v"})))
    assert image.size == (1200, 800)


def test_a_backfill_is_drawn_as_a_1200_by_800_png():
    start = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    minutes = [start + timedelta(minutes=m) for m in range(31)]
    timeline = BackfillTimeline(
        rows=[("digits@v1", "0-of-2"), ("digits@v1", "1-of-2"), ("other@v2", "all")],
        spans=[RunSpan("digits@v1", "0-of-2", "r0", DONE, minutes[0], minutes[10]),
               RunSpan("digits@v1", "1-of-2", "r1", FAILED, minutes[2], minutes[5]),
               RunSpan("digits@v1", "1-of-2", "r2", RUNNING, minutes[6], minutes[20])],
        finished=[(minutes[0], 0), (minutes[4], 60), (minutes[10], 100)],
        listed=200, unlisted_shards=1, now=minutes[20], estimated_end=minutes[30])
    image = Image.open(io.BytesIO(draw_backfill(timeline)))
    assert (image.format, image.size) == ("PNG", (1200, 800))
