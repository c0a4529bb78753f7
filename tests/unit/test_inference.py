import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagegraph.config import S3Config
from imagegraph.imaging.perceptual_hash import perceptual_hash
from imagegraph.infer.classify import (
    STAGE_DECODE,
    STAGE_READ,
    STATUS_FAILED,
    STATUS_OK,
    InferenceSettings,
    ModelTimes,
    classify_prepared,
    classify_stream,
)
from imagegraph.model.artifact import (
    KERAS,
    LABELS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SAVED_MODEL,
    SAVED_MODEL_FILE,
    ModelMetadata,
    model_format,
    write_artifact,
)
from imagegraph.model.cache import LOAD_LINE_PREFIX, LoadedModel, ModelCache
from imagegraph.storage.object_reader import ReaderSettings

METADATA = ModelMetadata(name="brightness", version="1", input_height=4, input_width=4,
                         channels=1, preprocessing="scale_0_1", classes=("dark", "mid", "bright"))
SETTINGS = InferenceSettings(
    top_k=2, batch_size=2, max_image_pixels=10**6, threads=1, embedding=True,
    reader=ReaderSettings.from_config(S3Config(), threads=3, max_bytes=10**6))


@pytest.fixture(scope="module")
def brightness_model():
    """A fixed-weight model whose logits are [0, 5m-2.5, 12m-8] for mean brightness m in 0..1:
    dark below 0.5, mid up to about 0.79, bright above."""
    import tensorflow as tf

    inputs = tf.keras.Input((4, 4, 1))
    mean = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf.keras.layers.Dense(3, activation="softmax")
    outputs = dense(mean)
    model = tf.keras.Model(inputs, outputs)
    dense.set_weights([np.array([[0.0, 5.0, 12.0]], np.float32),
                       np.array([0.0, -2.5, -8.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def saved_model_files(brightness_model, tmp_path_factory):
    """The brightness model as a SavedModel artifact (`model.export`), {relative name: bytes}."""
    directory = tmp_path_factory.mktemp("artifact")
    brightness_model.export(str(directory / "saved_model"), verbose=False)
    (directory / LABELS_FILE).write_text(json.dumps(list(METADATA.classes)))
    (directory / METADATA_FILE).write_text(METADATA.to_json())
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in directory.rglob("*") if path.is_file()}


def png(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (6, 6), level).save(buffer, format="PNG")
    return buffer.getvalue()


def test_top_k_in_order_and_failed_rows_kept_in_place(brightness_model, tmp_path):
    objects = {"dark.png": png(0), "bad.jpg": b"not an image", "bright.png": png(255),
               "empty.png": b"", "mid.png": png(150)}
    for name, data in objects.items():
        (tmp_path / name).write_bytes(data)
    uris = pd.Series([f"file://{tmp_path}/{name}" for name in objects] +
                     [f"file://{tmp_path}/gone.png", f"file://{tmp_path}/huge.png"])
    sizes = pd.Series([None] * 6 + [SETTINGS.reader.max_bytes + 1], dtype="float64")
    model = LoadedModel(brightness_model, METADATA, SETTINGS.batch_size, embedding=True)
    # two Arrow batches: the second is read and decoded while the first is classified
    etags = pd.Series([None] * 7, dtype="object")  # file:// objects: no ETag
    batches = iter([(uris[:3], sizes[:3], etags[:3]), (uris[3:], sizes[3:], etags[3:])])
    result = pd.concat(list(classify_stream(model, batches, METADATA, SETTINGS)),
                       ignore_index=True)
    assert result["uri"].tolist() == uris.tolist()
    assert result["status"].tolist() == [STATUS_OK, STATUS_FAILED, STATUS_OK, STATUS_FAILED,
                                         STATUS_OK, STATUS_FAILED, STATUS_FAILED]
    assert result["stage"].tolist()[5:] == [STAGE_READ, STAGE_READ]
    assert result["reason"].tolist()[5:] == [
        "object not found", f"object is {SETTINGS.reader.max_bytes + 1} bytes, over the "
                            f"limit of {SETTINGS.reader.max_bytes}"]
    assert "retryable" not in result.columns  # the retry class is the reason's
    assert result["bytes"].tolist()[:2] == [len(objects["dark.png"]), len(b"not an image")]
    assert result["reason"][1] == "not an image: text"
    assert result["reason"][3] == "empty object (0 bytes)"
    assert result["labels"][0] == ["dark", "mid"]
    assert result["labels"][2][0] == "bright"
    assert result["labels"][4][0] == "mid"
    assert result["scores"][0][0] > result["scores"][0][1]
    assert (result["width"][0], result["height"][0], result["format"][0]) == (6, 6, "PNG")
    assert result["bucket"][0] == "" and result["key"][0] == f"{tmp_path}/dark.png"
    assert result["stage"][1] == STAGE_DECODE
    assert len(result["embedding"][0]) == 1  # the pooled mean: the layer before the softmax
    assert result["embedding"][0][0] == pytest.approx(0.0)
    assert result["embedding"][2][0] == pytest.approx(1.0)
    assert result["embedding"][1] is None
    # the perceptual hash of every decoded image, from the pixels the model got (not the bytes)
    assert result["phash"].notna().tolist() == [True, False, True, False, True, False, False]
    assert result["phash"][0] == perceptual_hash(np.zeros((METADATA.input_height,
                                                            METADATA.input_width,
                                                            METADATA.channels), np.uint8))


class SlowModel:
    """`model` whose every prediction takes at least `seconds` longer."""

    def __init__(self, model: LoadedModel, seconds: float):
        self.model, self.seconds, self.calls = model, seconds, 0

    def predict(self, pixels: np.ndarray):
        self.calls += 1
        time.sleep(self.seconds)
        return self.model.predict(pixels)


def test_the_model_time_is_split_into_classifying_and_waiting_for_decodes(brightness_model,
                                                                          tmp_path):
    """Three batches of two 6x6 PNGs (read and decoded in milliseconds) and a model taking
    0.4 s a call: the model's time is classifying, not waiting."""
    for n in range(6):
        (tmp_path / f"{n}.png").write_bytes(png(40 * n))
    uris = pd.Series([f"file://{tmp_path}/{n}.png" for n in range(6)])
    nulls = pd.Series([None] * 6, dtype="float64")
    model = SlowModel(LoadedModel(brightness_model, METADATA, SETTINGS.batch_size,
                                  embedding=True), 0.4)
    times = ModelTimes()
    batches = iter([(uris[i:i + 2], nulls[i:i + 2], nulls[i:i + 2]) for i in (0, 2, 4)])
    frames = list(classify_stream(model, batches, METADATA, SETTINGS, times))
    assert [len(frame) for frame in frames] == [2, 2, 2] and model.calls == 3
    assert 1.2 <= times.ran_s < 1.2 + 1.0
    assert 0.0 < times.waited_s < 0.3


def test_inference_subtracts_the_embedding_centre_stored_with_the_model(brightness_model,
                                                                        tmp_path):
    centred = replace(METADATA, embedding_centre=(0.25,))
    write_artifact(str(tmp_path / "model"), brightness_model, centred)
    stored = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    assert stored["embedding_centre"] == [0.25]
    loaded = ModelMetadata.from_json(json.dumps(stored))
    assert loaded.embedding_centre == (0.25,)
    del stored["embedding_centre"]  # a model trained before centres were measured
    assert ModelMetadata.from_json(json.dumps(stored)).embedding_centre == ()
    for name, level in (("dark.png", 0), ("bright.png", 255)):
        (tmp_path / name).write_bytes(png(level))
    uris = pd.Series([f"file://{tmp_path}/dark.png", f"file://{tmp_path}/bright.png"])
    batch = [(uris, pd.Series([None, None], dtype="float64"), pd.Series([None, None]))]
    model = LoadedModel(brightness_model, loaded, SETTINGS.batch_size, embedding=True)
    result = pd.concat(list(classify_stream(model, iter(batch), loaded, SETTINGS)))
    assert [e[0] for e in result["embedding"]] == pytest.approx([-0.25, 0.75])
    plain = pd.concat(list(classify_stream(model, iter(batch), METADATA, SETTINGS)))
    assert [e[0] for e in plain["embedding"]] == pytest.approx([0.0, 1.0])


def softmax(logits) -> np.ndarray:
    exponentials = np.exp(np.asarray(logits, np.float64) - np.max(logits))
    return exponentials / exponentials.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_scores_are_the_softmax_of_the_logits_over_the_temperature(brightness_model,
                                                                   temperature):
    # mean brightness 0 and 1: logits [0, -2.5, -8] and [0, 2.5, 4]
    prepared = [({"uri": f"file:///{level}.png"}, np.full((4, 4, 1), level, np.uint8))
                for level in (0, 255)]
    model = LoadedModel(brightness_model, METADATA, SETTINGS.batch_size, embedding=False)
    settings = dataclasses.replace(SETTINGS, embedding=False, temperature=temperature)
    result = classify_prepared(model, prepared, METADATA, settings)
    for row, logits, best in ((0, [0.0, -2.5, -8.0], [0, 1]), (1, [0.0, 2.5, 4.0], [2, 1])):
        expected = softmax(np.array(logits) / temperature)
        assert result["labels"][row] == [METADATA.classes[i] for i in best]
        assert result["scores"][row] == pytest.approx(expected[best].tolist(), rel=1e-5)
    # dark's best score: 0.9239 as the model gives it, 0.7664 at T = 2 (softer), 0.9933 at 0.5
    assert round(result["scores"][0][0], 4) == {1.0: 0.9239, 2.0: 0.7664, 0.5: 0.9933}[
        temperature]


def test_model_cache_loads_once_per_worker(brightness_model, tmp_path, capsys):
    write_artifact(str(tmp_path), brightness_model, METADATA)
    files = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert MODEL_FILE in files
    cache = ModelCache()
    first = cache.get(METADATA, files, batch_size=4)
    for _ in range(3):  # later tasks and batches in the same worker
        assert cache.get(METADATA, files, batch_size=4) is first
    assert cache.loads == 1
    # one line on the worker's stderr, naming the model, the worker and its Python
    load_lines = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith(LOAD_LINE_PREFIX)]
    assert len(load_lines) == 1 and load_lines[0].startswith(
        f"{LOAD_LINE_PREFIX} {METADATA.tag} loaded in python worker {os.getpid()} "
        f"({sys.prefix}) in ")
    pixels = np.full((3, 4, 4, 1), 255, np.uint8)   # 3 images, padded to 4 inside
    probabilities, embeddings = first.predict(pixels)
    assert probabilities.shape == (3, 3) and embeddings is None
    np.testing.assert_allclose(probabilities, np.asarray(brightness_model(pixels / 255.0)),
                               rtol=1e-5)


def test_loading_a_model_leaves_no_local_files(brightness_model, tmp_path, monkeypatch):
    artifact, scratch = tmp_path / "artifact", tmp_path / "scratch"
    artifact.mkdir()
    scratch.mkdir()
    write_artifact(str(artifact), brightness_model, METADATA)
    files = {name: (artifact / name).read_bytes() for name in os.listdir(artifact)}
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded = ModelCache().get(METADATA, files, batch_size=4)
    assert list(scratch.iterdir()) == []
    assert loaded.predict(np.full((1, 4, 4, 1), 255, np.uint8))[0].shape == (1, 3)


def test_fixed_batch_function_is_traced_once(brightness_model):
    model = LoadedModel(brightness_model, METADATA, batch_size=4, embedding=False)
    for count in (4, 1, 3, 4):
        probabilities, _ = model.predict(np.zeros((count, 4, 4, 1), np.uint8))
        assert probabilities.shape == (count, 3)
    assert model._run.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("family, pixel, expected", [
    ("scale_0_1", 255, 1.0), ("mobilenet_v2", 255, 1.0), ("mobilenet_v2", 0, -1.0),
    ("efficientnet", 200, 200.0),
])
def test_preprocessing_families(family, pixel, expected):
    from imagegraph.model.artifact import preprocess

    out = np.asarray(preprocess(np.full((1, 2, 2, 3), pixel, np.uint8), family))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_resnet50_preprocessing_is_bgr_minus_imagenet_means():
    from imagegraph.model.artifact import preprocess

    rgb = np.zeros((1, 1, 1, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    out = np.asarray(preprocess(rgb, "resnet50"))[0, 0, 0]
    np.testing.assert_allclose(out, [-103.939, -116.779, 255 - 123.68], rtol=1e-5)


def test_tflite_runtime_matches_tensorflow(brightness_model):
    pixels = np.stack([np.full((4, 4, 1), level, np.uint8) for level in (0, 90, 150, 255)])
    graph = LoadedModel(brightness_model, METADATA, batch_size=4, embedding=True)
    lite = LoadedModel(brightness_model, METADATA, batch_size=4, embedding=True,
                       runtime="tflite", threads=1)
    for count in (4, 3):  # a full batch and a padded one
        expected, expected_embeddings = graph.predict(pixels[:count])
        probabilities, embeddings = lite.predict(pixels[:count])
        assert probabilities.shape == (count, 3) and embeddings.shape == (count, 1)
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        np.testing.assert_allclose(embeddings, expected_embeddings, atol=1e-5)


@pytest.mark.parametrize("runtime", ["tensorflow", "tflite"])
def test_saved_model_gives_the_keras_model_probabilities(brightness_model, saved_model_files,
                                                         runtime):
    assert {SAVED_MODEL_FILE, "saved_model/variables/variables.index"} <= set(saved_model_files)
    pixels = np.stack([np.full((4, 4, 1), level, np.uint8) for level in (0, 90, 150, 255)])
    keras = LoadedModel(brightness_model, METADATA, batch_size=4, embedding=False,
                        runtime=runtime, threads=1)
    cache = ModelCache()
    saved = cache.get(METADATA, saved_model_files, batch_size=4, threads=1, runtime=runtime)
    for count in (4, 3, 1, 4):  # full and padded batches, many predicts from one load
        assert cache.get(METADATA, saved_model_files, batch_size=4, threads=1,
                         runtime=runtime) is saved
        probabilities, embeddings = saved.predict(pixels[:count])
        assert probabilities.shape == (count, 3) and embeddings is None
        np.testing.assert_allclose(probabilities, keras.predict(pixels[:count])[0], atol=1e-5)
    assert cache.loads == 1
    np.testing.assert_allclose(probabilities, np.asarray(brightness_model(pixels / 255.0)),
                               atol=1e-5)


def test_artifact_holds_exactly_one_kind_of_model(saved_model_files):
    labels_and_metadata = {LABELS_FILE: b"[]", METADATA_FILE: b"{}"}
    assert model_format({**labels_and_metadata, MODEL_FILE: b""}) == KERAS
    assert model_format(saved_model_files) == SAVED_MODEL
    with pytest.raises(ValueError, match="^neither model.keras nor saved_model/saved_model.pb: "
                                         "expected exactly one model"):
        ModelCache().get(METADATA, labels_and_metadata, batch_size=4)
    with pytest.raises(ValueError, match="^both model.keras and saved_model/saved_model.pb: "):
        ModelCache().get(METADATA, {**saved_model_files, MODEL_FILE: b""}, batch_size=4)


def test_saved_model_refuses_embedding_and_several_outputs(saved_model_files, tmp_path):
    import tensorflow as tf

    with pytest.raises(ValueError, match="embedding needs a Keras model"):
        ModelCache().get(METADATA, saved_model_files, batch_size=4, embedding=True)

    class TwoOutputs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4, 4, 1), tf.float32)])
        def serve(self, images):
            return {"probabilities": tf.reduce_mean(images, [1, 2]), "logits": images[:, 0, 0]}

    module = TwoOutputs()
    tf.saved_model.save(module, str(tmp_path), signatures=module.serve)
    with pytest.raises(ValueError, match=r"returns \['logits', 'probabilities'\]: expected one "
                                         "input, the preprocessed images, and one output"):
        LoadedModel(tf.saved_model.load(str(tmp_path)), METADATA, 4, embedding=False)
