"""The run's picture is a PNG of the report's figures (looked at once by eye; here its form)."""
import io

from PIL import Image

from imagegraph.runs.picture import draw_run

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
