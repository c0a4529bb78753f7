"""inference.precision int8 through the real job on the trained digits: the artifact's stored
calibration sample, the answer check on its labeled held-out digits (top-1, top-k scores,
embeddings), the int8 model shipped to the workers, a reconciled run whose answers agree with the
float32 model's and whose predictions say int8; a model without a stored sample, calibrated on
images the driver draws from the job's input; and a run whose check fails, in float32."""
from dataclasses import replace

import numpy as np
import pytest
from conftest import BUCKET, MODEL_URI
from pyspark.sql import functions as F

from imagegraph.imaging.decode import decode_image
from imagegraph.infer.job import run_inference
from imagegraph.model.artifact import ARTIFACT_FILES
from imagegraph.model.cache import ModelCache
from imagegraph.model.calibration import CALIBRATION_FILE
from imagegraph.model.store import read_model_artifact
from imagegraph.storage.selection import PREFIX, InputSource

INPUT = InputSource(PREFIX, f"s3a://{BUCKET}/incoming/")
OUTPUT = f"s3a://{BUCKET}/int8-results"
UNCALIBRATED_KEY = "models/digits-uncalibrated/v1"


def int8_config(config, graph: bool, **inference):
    """int8 asked for (and `inference` settings); top-1 agreement must be shown above 80%: the
    held-out split is 32 digits, too few to show 99% (299 at the least) or even 95% (59); at
    80% 32 check images pass at 30 agreeing, the 34 drawn from the input at 32."""
    return replace(config, graph=replace(config.graph, enabled=graph),
                   inference=replace(config.inference, precision="int8",
                                     int8_min_agreement=0.8, **inference))


def top_classes(spark, run_id: str) -> dict[str, str]:
    rows = (spark.read.parquet(f"{OUTPUT}/predictions").where(F.col("run_id") == run_id)
            .select("uri", F.element_at("labels", 1).alias("top")).collect())
    return {row["uri"]: row["top"] for row in rows}


def precisions(spark, run_id: str) -> dict[str, int]:
    """The run's prediction rows by their `precision` column."""
    rows = (spark.read.parquet(f"{OUTPUT}/predictions").where(F.col("run_id") == run_id)
            .groupBy("precision").count().collect())
    return {row["precision"]: row["count"] for row in rows}


def float32_top_classes(spark, dataset) -> dict[str, str]:
    """The float32 model's top class of each held-out digit, run in this process."""
    metadata, files = read_model_artifact(spark, MODEL_URI)
    model = ModelCache().get(metadata, files, 64, runtime="tflite")
    digits = {key: data for key, data in dataset["incoming"].items()
              if key.startswith("digits/")}
    pixels = np.stack([decode_image(data, 32, 32, 1, 10**6, 10**6).pixels
                       for data in digits.values()])
    probabilities, _ = model.predict(pixels)
    return {f"s3://{BUCKET}/incoming/{key}": metadata.classes[int(np.argmax(p))]
            for key, p in zip(digits, probabilities)}


@pytest.fixture(scope="module")
def int8_run(spark, config, trained_model, graph):
    return run_inference(spark, int8_config(config, graph=True, embedding=True), INPUT,
                         MODEL_URI, OUTPUT)


def test_training_stores_a_labeled_calibration_sample(s3, trained_model):
    metrics = trained_model.metadata.metrics
    assert s3.head_object(Bucket=BUCKET, Key=f"models/digits/v1/{CALIBRATION_FILE}")
    # 200 digits: all the training split (under the 200 asked for) and the held-out split
    assert metrics["int8_calibration_images"] == trained_model.train_images
    assert metrics["int8_check_images"] == trained_model.holdout_images


def test_int8_run_reconciles_and_agrees_with_float32(spark, dataset, int8_run,
                                                      trained_model):
    assert (int8_run.precision, int8_run.int8_fallback) == ("int8", "")
    assert int8_run.int8_calibration == (
        f"artifact: {trained_model.train_images} images to calibrate, "
        f"{trained_model.holdout_images} labeled to check")
    assert int8_run.int8_check_images == trained_model.holdout_images == 32
    assert int8_run.int8_agreement >= 30 / 32
    assert int8_run.int8_check.startswith(f"top-1 agreement {round(int8_run.int8_agreement * 32)}"
                                          " of 32 (")
    assert "pass at 30 of 32 (a model at 80.00% passes with p 0.0317" in int8_run.int8_check
    # the scores and embeddings (what similar_to links) within the default bounds
    assert 0 < int8_run.int8_max_score_delta <= 0.1
    assert 0.999 <= int8_run.int8_min_embedding_cosine <= 1
    assert int8_run.float32_accuracy == pytest.approx(
        trained_model.metadata.metrics["holdout_accuracy"], abs=0.03)
    assert abs(int8_run.int8_accuracy - int8_run.float32_accuracy) <= 0.05
    assert int8_run.reconciles() and int8_run.classified == 44 and int8_run.graph_written == 44
    int8_top, float32_top = top_classes(spark, int8_run.run_id), float32_top_classes(spark,
                                                                                     dataset)
    assert len(float32_top) == 40 and float32_top.keys() <= int8_top.keys()
    agreeing = sum(int8_top[uri] == float32_top[uri] for uri in float32_top)
    assert agreeing >= 38, f"int8 and float32 agree on {agreeing} of 40 digits"
    assert precisions(spark, int8_run.run_id) == {"int8": 44}


def test_a_run_whose_check_fails_runs_and_records_float32(spark, config, trained_model,
                                                           int8_run):
    report = run_inference(spark, int8_config(config, graph=False, int8_max_score_delta=0.0),
                           INPUT, MODEL_URI, OUTPUT)
    delta = report.int8_max_score_delta
    assert report.precision == "float32" and delta > 0
    assert report.int8_fallback.startswith(
        f"int8 answers differ from float32's: top-k scores: differ by up to {delta:.4f}, "
        f"{delta:.4f} over inference.int8_max_score_delta 0; accuracy int8 ")
    assert report.reconciles() and report.classified == 44
    assert precisions(spark, report.run_id) == {"float32": 44}


def test_a_model_without_a_sample_is_calibrated_on_the_input(spark, config, s3, trained_model):
    for name in ARTIFACT_FILES:  # the artifact without calibration.npz
        s3.copy_object(Bucket=BUCKET, Key=f"{UNCALIBRATED_KEY}/{name}",
                       CopySource={"Bucket": BUCKET, "Key": f"models/digits/v1/{name}"})
    report = run_inference(spark, int8_config(config, graph=False), INPUT,
                           f"s3a://{BUCKET}/{UNCALIBRATED_KEY}", OUTPUT)
    # 45 objects drawn, the corrupt one left out, 44 split 200:700
    assert report.int8_calibration == "input: 10 images to calibrate, 34 to check"
    assert report.int8_check_images == 34 and report.int8_accuracy is None
    assert report.precision == "int8" and report.int8_agreement >= 32 / 34
    assert report.int8_min_embedding_cosine is None  # no embeddings asked for
    assert report.reconciles() and report.classified == 44
