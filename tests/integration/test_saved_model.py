"""A SavedModel artifact (`model.export` beside labels.json and metadata.json) in S3, through
the real job: read through s3a, shipped to the workers, run; the graph and Parquet read back."""
import io
import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import BUCKET
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Order, T
from PIL import Image
from s3_objects import put_objects

from imagegraph.errors import JobError
from imagegraph.infer.job import run_inference
from imagegraph.model.artifact import ModelMetadata
from imagegraph.model.store import read_model_artifact
from imagegraph.storage.selection import PREFIX, InputSource

MODEL_KEY = "models/brightness/sm1"
MODEL_URI = f"s3a://{BUCKET}/{MODEL_KEY}"
INPUT = InputSource(PREFIX, f"s3a://{BUCKET}/brightness/")
OUTPUT = f"s3a://{BUCKET}/brightness-results"
METADATA = ModelMetadata(name="brightness", version="sm1", input_height=8, input_width=8,
                         channels=1, preprocessing="scale_0_1", classes=("dark", "mid", "bright"))
EXPECTED = {"black.png": "dark", "charcoal.png": "dark", "gray.png": "mid", "white.png": "bright"}
LEVELS = {"black.png": 0, "charcoal.png": 40, "gray.png": 150, "white.png": 255}


def png(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), level).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(s3, tmp_path_factory):
    """The artifact's files ({relative name: bytes}), put under MODEL_URI, and the images
    (four grays and one corrupt object) under INPUT. The model's logits are
    [0, 5m-2.5, 12m-8] for mean brightness m in 0..1."""
    import tensorflow as tf

    inputs = tf.keras.Input((8, 8, 1))
    dense = tf.keras.layers.Dense(3, activation="softmax")
    model = tf.keras.Model(inputs, dense(tf.keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[0.0, 5.0, 12.0]], np.float32),
                       np.array([0.0, -2.5, -8.0], np.float32)])
    directory = tmp_path_factory.mktemp("exported")
    model.export(str(directory / "saved_model"), verbose=False)
    (directory / "labels.json").write_text(json.dumps(list(METADATA.classes)))
    (directory / "metadata.json").write_text(METADATA.to_json())
    files = {path.relative_to(directory).as_posix(): path.read_bytes()
             for path in directory.rglob("*") if path.is_file()}
    put_objects(s3, BUCKET, f"{MODEL_KEY}/", files)
    put_objects(s3, BUCKET, "brightness/", {**{name: png(level) for name, level in LEVELS.items()},
                                            "broken.png": b"\x89PNG\r\n\x1a\n broken"})
    return files


def test_driver_ships_every_file_of_the_saved_model(spark, exported):
    metadata, files = read_model_artifact(spark, MODEL_URI)
    assert metadata == replace(METADATA, uri=MODEL_URI)
    assert files == exported
    assert {"saved_model/saved_model.pb", "saved_model/variables/variables.index"} <= set(files)


def test_saved_model_run_reads_back_exact_labels(spark, config, exported, graph):
    report = run_inference(spark, config, INPUT, MODEL_URI, OUTPUT)
    assert (report.listed, report.classified, report.dead_lettered) == (5, 4, 1)
    assert report.graph_written == 4 and report.graph_failed == 0 and report.reconciles()
    assert graph.V().group_count().by(T.label).next() == {"image": 4, "class": 3, "model": 1}
    assert graph.E().group_count().by(T.label).next() == {"classified_as": 12, "has_class": 3}
    best = (graph.V().has_label("image").project("id", "class").by(T.id)
            .by(__.out_e("classified_as").order().by("score", Order.desc).limit(1)
                .in_v().values("name")).to_list())
    assert {row["id"].rsplit("/", 1)[1]: row["class"] for row in best} == EXPECTED
    predictions = spark.read.parquet(f"{OUTPUT}/predictions").where(
        f"run_id = '{report.run_id}'").collect()
    assert {row["uri"].rsplit("/", 1)[1]: row["labels"][0] for row in predictions} == EXPECTED


def test_saved_model_artifact_errors_are_clear(spark, config, exported, s3):
    with_embedding = replace(config, inference=replace(config.inference, embedding=True))
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup
    before = jobs()
    with pytest.raises(JobError, match=f"model {MODEL_URI} is a SavedModel: inference.embedding "
                                       "needs a model.keras model"):
        run_inference(spark, with_embedding, INPUT, MODEL_URI, OUTPUT)
    assert jobs() == before  # refused before any Spark job...
    spark.range(1).count()
    assert len(jobs()) > len(before)  # ...which the tracker would have seen
    put_objects(s3, BUCKET, f"{MODEL_KEY}-both/", {**exported, "model.keras": b"keras"})
    both = f"{MODEL_URI}-both"
    with pytest.raises(JobError, match=f"model {both} holds both model.keras and "
                                       "saved_model/saved_model.pb: expected exactly one model"):
        read_model_artifact(spark, both)
