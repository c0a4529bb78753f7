"""What the predictions mean, through the real job: the scores written to predictions/ and to
the graph's classified_as edges are the model's after the temperature training fitted, and
with `inference.min_score` an image whose best score is under it is unknown: marked so in
predictions/, one edge to `class:unknown` in the graph, counted in the report, and written
(not dead-lettered)."""
import io
import logging
from dataclasses import replace

import numpy as np
import pytest
from conftest import BUCKET
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from PIL import Image
from s3_objects import put_objects

from imagegraph.infer.job import run_inference
from imagegraph.model.artifact import ModelMetadata, write_artifact
from imagegraph.storage.selection import PREFIX, InputSource

INPUT = InputSource(PREFIX, f"s3a://{BUCKET}/calibrated/")
METADATA = ModelMetadata(name="brightness", version="t2", input_height=8, input_width=8,
                         channels=1, preprocessing="scale_0_1", classes=("dark", "mid", "bright"),
                         metrics={"temperature": 2.0})
LEVELS = {"black.png": 0, "charcoal.png": 40, "gray.png": 150, "white.png": 255}


def png(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), level).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_scores(level: int, temperature: float) -> dict[str, float]:
    """softmax(logits / T) of the model's logits [0, 5m-2.5, 12m-8], m = level / 255."""
    m = level / 255
    logits = np.array([0.0, 5 * m - 2.5, 12 * m - 8]) / temperature
    scores = np.exp(logits - logits.max())
    return dict(zip(METADATA.classes, (scores / scores.sum()).tolist()))


@pytest.fixture(scope="module")
def models(s3, tmp_path_factory):
    """{temperature or None: model URI}: the brightness model with T = 2 in its metrics, and
    the same model as an older artifact without one; the four grays and a corrupt object under
    INPUT."""
    import tensorflow as tf

    inputs = tf.keras.Input((8, 8, 1))
    dense = tf.keras.layers.Dense(3, activation="softmax")
    model = tf.keras.Model(inputs, dense(tf.keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[0.0, 5.0, 12.0]], np.float32),
                       np.array([0.0, -2.5, -8.0], np.float32)])
    uris = {}
    for temperature, metadata in ((2.0, METADATA), (None, replace(METADATA, version="old",
                                                                  metrics={}))):
        directory = tmp_path_factory.mktemp("artifact")
        write_artifact(str(directory), model, metadata)
        key = f"models/brightness/{metadata.version}"
        put_objects(s3, BUCKET, f"{key}/", {path.name: path.read_bytes()
                                            for path in directory.iterdir()})
        uris[temperature] = f"s3a://{BUCKET}/{key}"
    put_objects(s3, BUCKET, "calibrated/", {**{name: png(level) for name, level in LEVELS.items()},
                                            "broken.png": b"\x89PNG\r\n\x1a\n broken"})
    return uris


def predictions(spark, output: str, run_id: str) -> dict:
    rows = spark.read.parquet(f"{output}/predictions").where(f"run_id = '{run_id}'").collect()
    return {row["uri"].rsplit("/", 1)[1]: row for row in rows}


def edges(graph, model_tag: str) -> dict[str, dict[str, float]]:
    """{image name: {class: score}} of the model's classified_as edges."""
    found: dict[str, dict[str, float]] = {}
    for edge in (graph.E().has_label("classified_as").has("model", model_tag)
                 .project("image", "class", "score").by(__.out_v().id_())
                 .by(__.in_v().values("name")).by("score").to_list()):
        found.setdefault(edge["image"].rsplit("/", 1)[1], {})[edge["class"]] = edge["score"]
    return found


def test_calibrated_scores_and_unknowns_in_predictions_graph_and_report(spark, config, models,
                                                                        graph):
    output = f"s3a://{BUCKET}/calibrated-results"
    threshold = replace(config, inference=replace(config.inference, min_score=0.65))
    report = run_inference(spark, threshold, INPUT, models[2.0], output)

    # 5 listed: 4 classified (2 of them unknown), 1 corrupt; the unknowns are written
    assert (report.listed, report.classified, report.unknown, report.dead_lettered) == (5, 4, 2, 1)
    assert report.graph_written == 4 and report.graph_images == 4 and report.reconciles()
    assert (report.temperature, report.min_score) == (2.0, 0.65)
    assert "  classified           4 (2 unknown: best score under 0.65)" in report.summary_lines()

    expected = {name: expected_scores(level, 2.0) for name, level in LEVELS.items()}
    rows = predictions(spark, output, report.run_id)
    for name, row in rows.items():
        ranked = sorted(expected[name].items(), key=lambda kv: -kv[1])
        assert row["labels"] == [label for label, _ in ranked]
        assert row["scores"] == pytest.approx([score for _, score in ranked], rel=1e-5)
        assert (row["temperature"], row["min_score"]) == (2.0, 0.65)
    # best scores at T = 2: black 0.7664, charcoal 0.6798, gray 0.4342, white 0.6220 (0.8055 at
    # T = 1: calibration is what makes white unknown here)
    assert {name: row["unknown"] for name, row in rows.items()} == {
        "black.png": False, "charcoal.png": False, "gray.png": True, "white.png": True}

    # the graph: edges only at or above 0.65, an unknown image's one edge to class:unknown
    # scored with its best score
    found = edges(graph, METADATA.tag)
    assert found.keys() == LEVELS.keys()
    assert found["black.png"] == {"dark": pytest.approx(expected["black.png"]["dark"], rel=1e-5)}
    assert found["charcoal.png"] == {
        "dark": pytest.approx(expected["charcoal.png"]["dark"], rel=1e-5)}
    assert found["gray.png"] == {"unknown": pytest.approx(expected["gray.png"]["mid"], rel=1e-5)}
    assert found["white.png"] == {
        "unknown": pytest.approx(expected["white.png"]["bright"], rel=1e-5)}
    assert graph.V().group_count().by(T.label).next() == {"image": 4, "class": 4, "model": 1}
    # the queries docs/TRAINING.md gives: a class's likely images, a model's unknown ones
    assert sorted(uri.rsplit("/", 1)[1] for uri in graph.V("class:dark").in_e("classified_as")
                  .has("model", METADATA.tag).out_v().id_().to_list()) == [
        "black.png", "charcoal.png"]
    assert sorted(uri.rsplit("/", 1)[1] for uri in graph.V("class:unknown")
                  .in_e("classified_as").has("model", METADATA.tag).out_v().id_().to_list()) \
        == ["gray.png", "white.png"]
    assert graph.V("class:unknown").in_("has_class").count().next() == 0


def test_a_model_without_a_temperature_is_scored_as_before(spark, config, models, graph,
                                                           caplog):
    output = f"s3a://{BUCKET}/uncalibrated-results"
    with caplog.at_level(logging.INFO, logger="imagegraph.infer.job"):
        report = run_inference(spark, config, INPUT, models[None], output)
    assert report.temperature == 1.0 and report.unknown == 0 and report.reconciles()
    lines = [r.getMessage() for r in caplog.records if "no fitted temperature" in r.getMessage()]
    assert lines == ["model brightness@old has no fitted temperature (no 'temperature' in the "
                     "metrics of its metadata.json): its scores are written as the model gives "
                     "them (T = 1)"]
    rows = predictions(spark, output, report.run_id)
    for name, level in LEVELS.items():
        assert dict(zip(rows[name]["labels"], rows[name]["scores"])) == pytest.approx(
            expected_scores(level, 1.0), rel=1e-5)
        assert rows[name]["unknown"] is False and rows[name]["temperature"] == 1.0
    # no threshold: every image has its top-3 edges, no class:unknown
    assert {name: len(classes) for name, classes in edges(graph, "brightness@old").items()} \
        == dict.fromkeys(LEVELS, 3)
