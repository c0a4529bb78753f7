"""The bad-input corpus (dev/bad_images.py) through a whole inference run against S3 and
Gremlin Server: every object is in the graph and in predictions/ with the expected size and
format, or in the dead-letter output with its exact reason, and the run report reconciles."""
from collections import Counter
from dataclasses import replace

import bad_images
import pytest
from bad_images import Classified, DeadLettered
from conftest import BUCKET, MODEL_URI
from s3_objects import put_objects

from imagegraph.dead_letters import FINAL
from imagegraph.infer.job import run_inference
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR
from imagegraph.storage.selection import PREFIX as LISTING
from imagegraph.storage.selection import InputSource

PREFIX = "bad-input/"
OUTPUT = f"s3a://{BUCKET}/bad-input-results"
MAX_IMAGE_BYTES = 100_000
EMPTY = f"s3://{BUCKET}/{PREFIX}empty.jpg"


@pytest.fixture(scope="module")
def corpus_run(spark, config, trained_model, s3, graph):
    """(the run's report, {uri: expected outcome}, the run's dead-letter rows, its
    prediction rows)."""
    cases = bad_images.corpus(MAX_IMAGE_BYTES, config.inference.max_image_pixels)
    put_objects(s3, BUCKET, PREFIX, {case.key: case.data for case in cases})
    expected = {f"s3://{BUCKET}/{PREFIX}{case.key}": case.expected for case in cases}
    limited = replace(config, inference=replace(config.inference,
                                                max_image_bytes=MAX_IMAGE_BYTES))
    report = run_inference(spark, limited, InputSource(LISTING, f"s3a://{BUCKET}/{PREFIX}"),
                           MODEL_URI, OUTPUT)
    letters = (spark.read.parquet(f"{OUTPUT}/{DEAD_LETTER_DIR}")
               .where(f"run_id = '{report.run_id}'").collect())
    predictions = (spark.read.parquet(f"{OUTPUT}/{PREDICTIONS_DIR}")
                   .where(f"run_id = '{report.run_id}'").collect())
    return report, expected, letters, predictions


def test_every_nonempty_bad_input_is_classified_or_dead_lettered_with_its_reason(
        corpus_run, graph):
    """All but the zero-byte object (see the next test)."""
    report, expected, letters, predictions = corpus_run
    classified = {uri: e for uri, e in expected.items() if isinstance(e, Classified)}
    dead = {uri: e.reason for uri, e in expected.items()
            if isinstance(e, DeadLettered) and uri != EMPTY}
    assert len(classified) == 17 and len(dead) == 8

    assert report.classified == len(classified)
    assert {reason: count for reason, count in report.dead_lettered_by_reason.items()
            if reason != expected[EMPTY].reason} == dict(Counter(dead.values()))
    assert (report.graph_written, report.graph_failed) == (len(classified), 0)
    assert report.reconciles()
    assert sorted(graph.V().has_label("image").id_().to_list()) == sorted(classified)
    assert {row["uri"]: Classified(row["width"], row["height"], row["format"])
            for row in predictions} == classified
    assert graph.V().has_label("class").count().next() == 10  # the odd key dropped nothing
    # an object listed over the byte limit is refused unread (stage read), the rest decoded
    assert sorted((r["uri"], r["reason"], r["stage"]) for r in letters
                  if r["uri"] != EMPTY) == sorted(
        (uri, reason, "read" if reason.startswith("object is") else "decode")
        for uri, reason in dead.items())
    # bad bytes are final: never tried again by --resume
    assert {(r["retry_class"], r["attempt"]) for r in letters} == {(FINAL, 1)}


def test_zero_byte_object_is_dead_lettered(corpus_run):
    report, expected, letters, _ = corpus_run
    assert report.listed == len(expected)
    assert [(r["reason"], r["stage"]) for r in letters if r["uri"] == EMPTY] == [
        ("empty object (0 bytes)", "decode")]


def test_heic_and_avif_uploads_are_classified_at_their_displayed_size(corpus_run):
    """Read by libheif: a HEIC stored rotated, one whose thumbnail the job decodes (the model's
    32x32 input is smaller than it), a grid of tiles as an iPhone writes (2 x 3 tiles of 64
    pixels, shown 128 x 192), an AVIF and an AVIF stored rotated; each is one prediction row
    with the photo's displayed size, none a dead letter."""
    report, _, letters, predictions = corpus_run
    libheif_rows = sorted((row["uri"].rsplit("/", 1)[1], row["width"], row["height"],
                           row["format"]) for row in predictions
                          if row["format"] in ("AVIF", "HEIF"))
    assert libheif_rows == [("exif-rotated.avif", 20, 40, "AVIF"),
                            ("exif-rotated.heic", 20, 40, "HEIF"),
                            ("grid.heic", 128, 192, "HEIF"),
                            ("halves.avif", 36, 24, "AVIF"), ("halves.heic", 36, 24, "HEIF"),
                            ("thumbnail.heic", 240, 320, "HEIF")]
    assert [r for r in letters if r["uri"].endswith((".avif", ".heic"))] == []
