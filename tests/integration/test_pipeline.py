"""Train, then infer twice, through Spark against the real S3 and Gremlin servers; read the
graph and the Parquet outputs back and check exact counts, ids and values."""
import hashlib
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from conftest import BUCKET, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from pyspark.sql.functions import pandas_udf
from s3_objects import put_objects

from imagegraph import __version__
from imagegraph.errors import JobError
from imagegraph.imaging.decode import decode_image
from imagegraph.infer.job import run_inference
from imagegraph.model.cache import ModelCache
from imagegraph.model.store import read_model_artifact
from imagegraph.storage.selection import PREFIX, InputSource
from imagegraph.train.data import labeled_images
from imagegraph.train.lineage import GIT_COMMIT_ENV, data_fingerprint

OUTPUT = f"s3a://{BUCKET}/results"
INPUT = InputSource(PREFIX, f"s3a://{BUCKET}/incoming/")
COFFEE = f"s3://{BUCKET}/incoming/photos/coffee.jpg"
CORRUPT = f"s3://{BUCKET}/incoming/corrupt/broken.jpg"
DIGITS = [str(d) for d in range(10)]
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


@pytest.fixture(scope="module")
def first_run(spark, config, trained_model, graph):
    return run_inference(spark, config, INPUT, MODEL_URI, OUTPUT)


def test_training_exports_a_usable_artifact(spark, trained_model):
    metadata, files = read_model_artifact(spark, MODEL_URI)
    assert metadata.tag == "digits@v1"
    assert metadata.classes == tuple(DIGITS)
    assert (metadata.input_height, metadata.input_width, metadata.channels) == (32, 32, 1)
    assert trained_model.train_images + trained_model.holdout_images \
        + trained_model.test_images == 200
    assert metadata.metrics["holdout_images"] == trained_model.holdout_images > 0
    # chance is 0.1: well above it means labels, decoding and petastorm's feed line up
    assert metadata.metrics["holdout_accuracy"] >= 0.5
    assert set(files) == {"model.keras", "labels.json", "metadata.json"}


def test_run_report_counts(first_run, dataset):
    assert first_run.listed == len(dataset["incoming"]) == 45
    assert first_run.classified == 44
    assert first_run.dead_lettered == 1
    assert first_run.graph_written == 44 and first_run.graph_failed == 0
    assert first_run.vertices_written == 44 + 10 + 1
    assert first_run.edges_written == 44 * 3 + 10
    assert first_run.reconciles()
    # the workers' model times reach the report: the model ran on 44 images and waited for
    # at least the first batch's reads and decodes
    assert first_run.model_ran_s > 0 and first_run.model_waited_s > 0
    assert (f"  model                {first_run.model_ran_s:.1f} task-s classifying, "
            f"{first_run.model_waited_s:.1f} waiting") in "\n".join(first_run.summary_lines())


def test_graph_holds_exactly_the_expected_elements(first_run, graph):
    assert graph.V().group_count().by(T.label).next() == {"image": 44, "class": 10, "model": 1}
    assert graph.E().group_count().by(T.label).next() == {"classified_as": 132, "has_class": 10}
    assert sorted(graph.V().has_label("class").id_().to_list()) == [f"class:{d}" for d in DIGITS]
    assert graph.V("model:digits@v1").out("has_class").count().next() == 10


def test_image_vertex_and_edges_read_back(first_run, graph, dataset):
    data = dataset["incoming"]["photos/coffee.jpg"]
    image = graph.V(COFFEE).element_map().next()
    assert image[T.label] == "image"
    assert {k: v for k, v in image.items() if isinstance(k, str)} == {
        "sha256": hashlib.sha256(data).hexdigest()}
    edges = (graph.V(COFFEE).out_e("classified_as")
             .project("id", "score", "model", "run_id", "class").by(T.id).by("score")
             .by("model").by("run_id").by(__.in_v().values("name")).to_list())
    assert len(edges) == 3
    assert [e["id"] for e in edges] == [f"{COFFEE}|digits@v1|{e['class']}" for e in edges]
    assert {(e["model"], e["run_id"]) for e in edges} == {("digits@v1", first_run.run_id)}
    assert 0 < sum(e["score"] for e in edges) <= 1.0001


def test_parquet_outputs(first_run, spark):
    predictions = spark.read.parquet(f"{OUTPUT}/predictions").where(
        f"run_id = '{first_run.run_id}'")
    assert predictions.count() == 44
    assert predictions.where(f"uri = '{CORRUPT}'").count() == 0
    letters = spark.read.parquet(f"{OUTPUT}/dead_letter").where(
        f"run_id = '{first_run.run_id}'").collect()
    assert [(r["uri"], r["stage"]) for r in letters] == [(CORRUPT, "decode")]
    assert letters[0]["reason"].startswith("unreadable image header")


def test_second_run_changes_no_count(first_run, spark, config, graph):
    before = (graph.V().count().next(), graph.E().count().next())
    with_embedding = replace(config, inference=replace(config.inference, embedding=True))
    second = run_inference(spark, with_embedding, INPUT, MODEL_URI, OUTPUT)
    assert second.run_id != first_run.run_id
    assert (graph.V().count().next(), graph.E().count().next()) == before == (55, 142)
    assert graph.V(COFFEE).properties().key().to_list() == ["sha256"]
    assert graph.V(COFFEE).out_e("classified_as").values("run_id").dedup().to_list() == [
        second.run_id]
    # the second run asked for embeddings: the penultimate layer (Dense 128) in Parquet only
    embedded = spark.read.option("mergeSchema", "true").parquet(f"{OUTPUT}/predictions").where(
        f"run_id = '{second.run_id}'").select("embedding").collect()
    assert len(embedded) == 44 and {len(row["embedding"]) for row in embedded} == {128}
    assert "embedding" not in graph.V(COFFEE).element_map().next()


def test_lineage_in_metadata_and_on_the_model_vertex(first_run, spark, config, s3, dataset,
                                                     trained_model, graph):
    """metadata.json read back; the model vertex over Gremlin after two runs wrote it."""
    lineage = read_model_artifact(spark, MODEL_URI)[0].lineage
    put_objects(s3, BUCKET, "moved/elsewhere/", dataset["train"])
    moved = data_fingerprint(labeled_images(spark, config, f"s3a://{BUCKET}/moved/"))
    assert moved == (lineage["data_fingerprint"], lineage["images"])
    assert lineage["images"] == {"train": trained_model.train_images,
                                 "validation": trained_model.holdout_images,
                                 "test": trained_model.test_images}
    trained_at = datetime.strptime(lineage["trained_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(datetime.now(timezone.utc) - trained_at.replace(tzinfo=timezone.utc)) \
        < timedelta(hours=2)
    assert {k: v for k, v in lineage.items() if k not in ("data_fingerprint", "images",
                                                          "trained_at")} == {
        "training_input": f"s3a://{BUCKET}/train/", "imagegraph_version": __version__,
        "seed": 7, "base": "small_cnn", "weights": "none", "epochs": 4, "fine_tune_epochs": 0,
        "unfreeze_layers": 20, "learning_rate": 0.002, "fine_tune_learning_rate": 0.0001,
        "warmup_epochs": 1.0, "final_learning_rate_fraction": 0.1,
        "learning_rate_scaling": "linear",
        "early_stopping_patience": 0, "batch_size": 64, "holdout_percent": 20,
        "test_percent": 10, "class_weighting": "balanced", "pixel_feed": "uint8",
        "workers": 1, "augmentation": {"flip": False, "crop": 0.0, "brightness": 0.0,
                                       "contrast": 0.0},
        **({"git_commit": os.environ[GIT_COMMIT_ENV]} if os.environ.get(GIT_COMMIT_ENV) else {})}
    keys = ("training_input", "data_fingerprint", "imagegraph_version", "trained_at")
    assert sorted(graph.V("model:digits@v1").properties().key().to_list()) == sorted(
        ["name", "version", "uri", "input_size", "num_classes", *keys])
    model = graph.V("model:digits@v1").element_map().next()
    assert {k: model[k] for k in keys} == {k: lineage[k] for k in keys}
    assert graph.V().has("model", "data_fingerprint", lineage["data_fingerprint"]).id_() \
        .to_list() == ["model:digits@v1"]


def test_missing_model_and_input_stop_with_clear_errors(spark, config):
    with pytest.raises(JobError, match=f"model s3a://{BUCKET}/models/none not found: missing "
                                       "model.keras, labels.json, metadata.json"):
        run_inference(spark, config, INPUT, f"s3a://{BUCKET}/models/none", OUTPUT)
    with pytest.raises(JobError, match=f"input s3a://{BUCKET}/nothing-here/ does not exist"):
        run_inference(spark, config, InputSource(PREFIX, f"s3a://{BUCKET}/nothing-here/"),
                      MODEL_URI, OUTPUT)


def test_each_worker_loads_a_model_once_across_tasks_and_batches(first_run, spark, config):
    """A third run of the first run's model, in Arrow batches of 4 rows (a dozen batches per
    task): every Python worker has loaded each model it holds exactly once this session, over
    all runs, tasks and batches (a load per task or per batch would make loads > held)."""
    spark.conf.set(ARROW_BATCH, "4")
    try:
        third = run_inference(spark, config, INPUT, MODEL_URI, OUTPUT)
    finally:
        spark.conf.set(ARROW_BATCH, str(config.inference.arrow_batch_size))
    assert third.classified == 44

    @pandas_udf("array<long>")
    def model_cache_state(ids: pd.Series) -> pd.Series:
        """In the Python workers the classifying pandas UDFs ran in: [pid, models it loaded,
        models it holds] per row."""
        from imagegraph.model.cache import WORKER_MODELS

        return pd.Series([[os.getpid(), WORKER_MODELS.loads, len(WORKER_MODELS)]] * len(ids))

    rows = spark.range(16).repartition(8).select(model_cache_state("id").alias("s")).collect()
    workers = {row["s"][0]: tuple(row["s"][1:]) for row in rows}
    assert any(loads for loads, _ in workers.values()), workers
    assert all(loads == held for loads, held in workers.values()), workers


def test_the_embedding_centre_is_stored_with_the_model_and_used_at_inference(
        first_run, spark, config, dataset):
    """Training stores the validation images' mean embedding (post-ReLU: all >= 0) in
    metadata.json; inference writes each embedding less it."""
    metadata, files = read_model_artifact(spark, MODEL_URI, embedding=True)
    centre = np.asarray(metadata.embedding_centre)
    assert centre.shape == (128,) and (centre >= 0).all() and centre.max() > 0
    with_embedding = replace(config, inference=replace(config.inference, embedding=True))
    run = run_inference(spark, with_embedding, INPUT, MODEL_URI, OUTPUT)
    row = spark.read.option("mergeSchema", "true").parquet(f"{OUTPUT}/predictions").where(
        f"run_id = '{run.run_id}' and uri = '{COFFEE}'").select("embedding").first()
    pixels = decode_image(dataset["incoming"]["photos/coffee.jpg"], 32, 32, 1, 10**8,
                          10**9).pixels
    raw = ModelCache().get(metadata, files, 1, embedding=True).predict(pixels[None])[1][0]
    assert (raw >= 0).all()
    np.testing.assert_allclose(row["embedding"], raw - centre, atol=1e-5)
