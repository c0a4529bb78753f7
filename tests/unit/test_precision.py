"""int8 inference: full integer quantization of the artifact's model, the answer check against
float32 and its fallbacks, on small fixed-weight models (no Spark, no servers); the check's
measures alone are in test_answer_check."""
import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from imagegraph.config import S3Config
from imagegraph.infer.answer_check import CheckBounds
from imagegraph.infer.classify import InferenceSettings, classify_prepared
from imagegraph.infer.precision import FLOAT32, INT8, precision_line, quantize_and_check
from imagegraph.model.artifact import LABELS_FILE, METADATA_FILE, ModelMetadata, write_artifact
from imagegraph.model.cache import INT8_MODEL_FILE, ModelCache, calibration_batches
from imagegraph.model.calibration import ARTIFACT, INPUT, CalibrationSample
from imagegraph.model.temperature import scale_scores
from imagegraph.runs.report import RunReport
from imagegraph.storage.object_reader import ReaderSettings

BRIGHTNESS = ModelMetadata(name="brightness", version="1", input_height=4, input_width=4,
                           channels=1, preprocessing="scale_0_1",
                           classes=("dark", "mid", "bright"))
BOUNDS = CheckBounds(min_agreement=0.9, max_score_delta=0.1, min_embedding_cosine=0.999)
"""At 0.9 the 52 gray levels below pass at 51 agreeing (0.9^52 + 52 * 0.1 * 0.9^51 = 0.029)."""
SETTINGS = InferenceSettings(
    top_k=1, batch_size=8, max_image_pixels=10**6, threads=1, runtime="tflite",
    reader=ReaderSettings.from_config(S3Config(), threads=1, max_bytes=10**6))


def levels(*values: int) -> np.ndarray:
    """uint8 images (n, 4, 4, 1), each of one gray level."""
    return np.stack([np.full((4, 4, 1), value, np.uint8) for value in values])


def brightness_class(level: int) -> int:
    """The float model's class of a gray level (logits 0, 5m-2.5, 12m-8 for m = level/255)."""
    m = level / 255
    return int(np.argmax([0.0, 5 * m - 2.5, 12 * m - 8]))


def keras_files(tmp_path, model, metadata: ModelMetadata) -> dict[str, bytes]:
    write_artifact(str(tmp_path), model, metadata)
    return {path.name: path.read_bytes() for path in tmp_path.iterdir()}


def dense_model(weights, bias):
    """inputs (4, 4, 1) -> mean -> Dense(len(bias)) -> softmax, with fixed weights."""
    import tensorflow as tf

    inputs = tf.keras.Input((4, 4, 1))
    dense = tf.keras.layers.Dense(len(bias), activation="softmax")
    model = tf.keras.Model(inputs, dense(tf.keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([weights], np.float32), np.array(bias, np.float32)])
    return model


@pytest.fixture(scope="module")
def brightness_files(tmp_path_factory):
    return keras_files(tmp_path_factory.mktemp("brightness"),
                       dense_model([0.0, 5.0, 12.0], [0.0, -2.5, -8.0]), BRIGHTNESS)


def test_calibration_batches_are_the_samples_preprocessed_the_last_filled_by_repeats():
    batches = list(calibration_batches(levels(0, 51, 102, 204, 255), BRIGHTNESS, 2)())
    assert [len(batch) for batch in batches] == [1, 1, 1]
    images = np.stack([batch[0] for batch in batches])
    assert images.shape == (3, 2, 4, 4, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, :, 0, 0, 0], [[0.0, 0.2], [0.4, 0.8], [1.0, 1.0]],
                               rtol=1e-6)
    assert np.all(images == images[:, :, :1, :1, :])  # each image one level throughout


@pytest.mark.parametrize("family", ["scale_0_1", "mobilenet_v2"])
def test_int8_takes_the_decoders_pixels_and_keeps_the_answers(tmp_path, family):
    import tensorflow as tf

    metadata = ModelMetadata(**{**BRIGHTNESS.__dict__, "preprocessing": family})
    # mobilenet_v2 maps 0..255 to -1..1: the same model then reads mean brightness 2m-1
    files = keras_files(tmp_path, dense_model([0.0, 5.0, 12.0], [0.0, -2.5, -8.0]), metadata)
    check_levels = list(range(0, 256, 5))
    float32 = ModelCache().get(metadata, files, 8, runtime="tflite")
    expected = np.argmax(np.concatenate([float32.predict(levels(*check_levels[i:i + 8]))[0]
                                         for i in range(0, len(check_levels), 8)]), axis=1)
    sample = CalibrationSample(levels(*range(0, 256, 16)), levels(*check_levels), expected,
                               ARTIFACT)
    choice = quantize_and_check(files, metadata, SETTINGS, sample, BOUNDS)
    assert choice.precision == INT8 and choice.fallback == ""
    assert (choice.check.images, choice.check.agreement, choice.check.int8_accuracy,
            choice.check.float32_accuracy) == (len(check_levels), 1.0, 1.0, 1.0)
    assert 0 < choice.check.max_score_delta <= 0.1  # int8's softmax: steps of 1/256
    assert choice.check.min_embedding_cosine is None  # the run writes no embeddings
    assert choice.calibration == f"artifact: 16 images to calibrate, {len(check_levels)} " \
                                 "labeled to check"
    flatbuffer = choice.model_files[INT8_MODEL_FILE]
    assert set(choice.model_files) == set(files) | {INT8_MODEL_FILE}
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    (model_input,), (model_output,) = (interpreter.get_input_details(),
                                       interpreter.get_output_details())
    assert model_input["dtype"] == np.uint8  # the decoder's pixels, as they are
    assert model_output["dtype"] == np.float32  # probabilities
    inside = {d["dtype"] for d in interpreter.get_tensor_details()
              if d["index"] not in (model_input["index"], model_output["index"])}
    assert inside == {np.int8, np.int32}  # weights, activations and biases: all integer
    # the worker's path: the shipped flatbuffer in the cache, fixed batch, padded batches
    worker = ModelCache().get(metadata, choice.model_files, 8, threads=1, runtime="tflite",
                              precision=INT8)
    probabilities, _ = worker.predict(levels(0, 255, 200))
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float32
    assert np.argmax(probabilities, axis=1).tolist() == expected[[0, 51, 40]].tolist()


def test_int8_of_a_per_channel_family_takes_the_preprocessed_images(tmp_path):
    import tensorflow as tf

    # resnet50: BGR, each channel less its own ImageNet mean; no one scale and zero point
    # maps raw pixels to that, so the int8 model takes float input, quantized on the way in
    metadata = ModelMetadata(**{**BRIGHTNESS.__dict__, "channels": 3,
                                "preprocessing": "resnet50"})
    inputs = tf.keras.Input((4, 4, 3))
    dense = tf.keras.layers.Dense(3, activation="softmax")
    model = tf.keras.Model(inputs, dense(tf.keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.array([[0.0, 0.02, 0.05]] * 3, np.float32) / 3,
                       np.array([0.0, 0.0, -1.0], np.float32)])
    files = keras_files(tmp_path, model, metadata)
    gray = np.repeat(levels(*range(0, 256, 5)), 3, axis=3)
    sample = CalibrationSample(gray[::3], gray, None, INPUT)
    choice = quantize_and_check(files, metadata, SETTINGS, sample, BOUNDS)
    assert (choice.precision, choice.check.images) == (INT8, len(gray))
    assert choice.check.agreement >= 51 / 52
    interpreter = tf.lite.Interpreter(model_content=choice.model_files[INT8_MODEL_FILE])
    assert interpreter.get_input_details()[0]["dtype"] == np.float32


def test_int8_below_the_agreement_falls_back_to_float32_in_one_line(tmp_path, caplog):
    # two classes a hair apart: float32 always picks the second; int8's softmax output has
    # steps of 1/256, so it sees a tie and picks the first
    metadata = ModelMetadata(**{**BRIGHTNESS.__dict__, "classes": ("a", "b")})
    files = keras_files(tmp_path, dense_model([0.001, 0.002], [0.0, 0.0005]), metadata)
    sample = CalibrationSample(levels(0, 100, 200), levels(*range(10, 210, 5)),
                               np.ones(40, np.int32), ARTIFACT)  # labeled "b"
    bounds = CheckBounds(0.8, 0.1, 0.999)  # 40 images: pass at 37 agreeing
    with caplog.at_level(logging.INFO, logger="imagegraph.infer.precision"):
        choice = quantize_and_check(files, metadata, SETTINGS, sample, bounds)
    assert choice.precision == FLOAT32 and choice.model_files is files
    assert (choice.check.images, choice.check.agreement, choice.check.int8_accuracy,
            choice.check.float32_accuracy) == (40, 0.0, 0.0, 1.0)
    assert choice.check.max_score_delta < 0.01  # the scores stay: only top-1 fails
    assert choice.fallback == (
        "int8 answers differ from float32's: top-1: int8 agreed with float32 on 0 of 40 "
        "artifact images (0.00%), 37 under the 37 that show agreement above "
        "inference.int8_min_agreement 80.00% at 95% confidence; accuracy int8 0.0000, "
        "float32 1.0000")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"inference.precision int8: running float32 instead: {choice.fallback}")]
    report = RunReport(run_id="r", source="s", output_uri="o", model="m")
    choice.record(report)
    assert {key: value for key, value in report.to_dict().items()
            if key.startswith(("int8_", "float32_", "precision"))} == {
        "precision": FLOAT32,
        "int8_calibration": "artifact: 3 images to calibrate, 40 labeled to check",
        "int8_check_images": 40, "int8_agreement": 0.0, "int8_accuracy": 0.0,
        "float32_accuracy": 1.0, "int8_max_score_delta": choice.check.max_score_delta,
        "int8_min_embedding_cosine": None,
        "int8_check": "top-1 agreement 0 of 40 (0.00%; pass at 37 of 40 (a model at 80.00% "
                      f"passes with p 0.0285, at 98.00% with 0.9918)), top-k scores within "
                      f"{choice.check.max_score_delta:.4f}",
        "int8_fallback": choice.fallback}


def features_model():
    """inputs (4, 4, 1) -> mean m -> features (m, 1 - m) -> Dense(3) -> softmax: the
    brightness classes again, with a two-dimensional embedding."""
    import tensorflow as tf

    inputs = tf.keras.Input((4, 4, 1))
    features = tf.keras.layers.Dense(2, name="features")
    head = tf.keras.layers.Dense(3, activation="softmax")
    model = tf.keras.Model(inputs, head(features(
        tf.keras.layers.GlobalAveragePooling2D()(inputs))))
    features.set_weights([np.array([[1.0, -1.0]], np.float32), np.array([0.0, 1.0], np.float32)])
    head.set_weights([np.array([[0.0, 5.0, 12.0], [0.0, 0.0, 0.0]], np.float32),
                      np.array([0.0, -2.5, -8.0], np.float32)])
    return model


def test_the_check_compares_the_embeddings_the_run_writes(tmp_path, caplog):
    files = keras_files(tmp_path, features_model(), BRIGHTNESS)
    sample = CalibrationSample(levels(*range(0, 256, 16)), levels(*range(0, 256, 5)), None,
                               INPUT)
    settings = InferenceSettings(**{**SETTINGS.__dict__, "embedding": True})
    choice = quantize_and_check(files, BRIGHTNESS, settings, sample, BOUNDS)
    assert choice.precision == INT8 and choice.check.agreement >= 51 / 52
    cosine = choice.check.min_embedding_cosine
    assert 0.999 <= cosine < 1  # (m, 1 - m) in int8 steps: close, not the same
    strict = CheckBounds(0.9, 0.1, min_embedding_cosine=1.0)
    with caplog.at_level(logging.WARNING, logger="imagegraph.infer.precision"):
        choice = quantize_and_check(files, BRIGHTNESS, settings, sample, strict)
    assert choice.precision == FLOAT32
    assert choice.fallback == (f"int8 answers differ from float32's: embeddings: cosine "
                               f"similarity down to {cosine:.5f}, {1 - cosine:.5f} under "
                               f"inference.int8_min_embedding_cosine 1")
    assert len(caplog.records) == 1


def test_int8_scores_beyond_the_tolerance_fall_back(brightness_files):
    sample = CalibrationSample(levels(*range(0, 256, 16)), levels(*range(0, 256, 5)), None,
                               INPUT)
    choice = quantize_and_check(brightness_files, BRIGHTNESS, SETTINGS, sample,
                                CheckBounds(0.9, max_score_delta=0.0, min_embedding_cosine=1.0))
    delta = choice.check.max_score_delta
    assert choice.precision == FLOAT32 and choice.check.agreement >= 51 / 52 and delta > 0
    assert choice.fallback == (f"int8 answers differ from float32's: top-k scores: differ by "
                               f"up to {delta:.4f}, {delta:.4f} over "
                               f"inference.int8_max_score_delta 0")


def test_int8_scores_are_scaled_by_the_same_temperature(brightness_files):
    sample = CalibrationSample(levels(*range(0, 256, 16)), levels(*range(0, 256, 5)), None,
                               INPUT)
    settings = dataclasses.replace(SETTINGS, top_k=3, temperature=2.0)
    choice = quantize_and_check(brightness_files, BRIGHTNESS, settings, sample, BOUNDS)
    assert choice.precision == INT8
    model = ModelCache().get(BRIGHTNESS, choice.model_files, settings.batch_size, False, 1,
                             "tflite", INT8)
    prepared = [({"uri": f"file:///{level}.png"}, levels(level)[0]) for level in (0, 255)]
    result = classify_prepared(model, prepared, BRIGHTNESS, settings)
    for row, logits in ((0, [0.0, -2.5, -8.0]), (1, [0.0, 2.5, 4.0])):
        expected = np.exp(np.array(logits) / 2.0)
        expected /= expected.sum()  # dark: 0.7664, 0.2196, 0.0140 (0.9239 at T = 1)
        order = np.argsort(-expected)
        assert result["labels"][row] == [BRIGHTNESS.classes[i] for i in order]
        np.testing.assert_allclose(result["scores"][row], expected[order], atol=0.02)
    # the answer check measured the scores the run writes: both precisions' after T
    float32 = ModelCache().get(BRIGHTNESS, brightness_files, settings.batch_size, False,
                               runtime="tflite")
    raw = [np.concatenate([loaded.predict(sample.check[start:start + settings.batch_size])[0]
                           for start in range(0, len(sample.check), settings.batch_size)])
           for loaded in (float32, model)]
    scaled = [scale_scores(scores, 2.0) for scores in raw]
    delta = float(np.max(np.abs(scaled[0] - scaled[1])))  # top-3 of 3: every class
    assert choice.check.max_score_delta == pytest.approx(delta, abs=1e-6)
    assert abs(float(np.max(np.abs(raw[0] - raw[1]))) - delta) > 1e-3  # T = 1 would differ


def test_a_model_int8_cannot_convert_falls_back_to_float32(tmp_path, caplog):
    import tensorflow as tf

    class ErfModel(tf.Module):  # tf.math.erf: no TensorFlow Lite kernel, int8 or other
        @tf.function(input_signature=[tf.TensorSpec((None, 4, 4, 1), tf.float32)])
        def serve(self, images):
            mean = tf.reduce_mean(images, [1, 2])
            return {"probabilities": tf.nn.softmax(
                tf.concat([tf.math.erf(mean), 1 - mean, 0 * mean], axis=1))}

    module = ErfModel()
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures=module.serve)
    (tmp_path / LABELS_FILE).write_text(json.dumps(list(BRIGHTNESS.classes)))
    (tmp_path / METADATA_FILE).write_text(BRIGHTNESS.to_json())
    files = {path.relative_to(tmp_path).as_posix(): path.read_bytes()
             for path in tmp_path.rglob("*") if path.is_file()}
    sample = CalibrationSample(levels(0, 128, 255), levels(30, 220), None, INPUT)
    settings = InferenceSettings(**{**SETTINGS.__dict__, "runtime": "tensorflow"})
    with caplog.at_level(logging.WARNING, logger="imagegraph.infer.precision"):
        choice = quantize_and_check(files, BRIGHTNESS, settings, sample, BOUNDS)
    assert choice.precision == FLOAT32 and choice.check is None
    assert choice.fallback == ("the int8 conversion failed: ConverterError: 'tf.Erf' op is "
                               "neither a custom op nor a flex op")
    assert len(caplog.records) == 1 and choice.fallback in caplog.records[0].getMessage()
    # and float32 runs it (TensorFlow runtime): the job goes on
    probabilities, _ = ModelCache().get(BRIGHTNESS, files, 8, runtime="tensorflow").predict(
        levels(30, 220))
    assert np.argmax(probabilities, axis=1).tolist() == [1, 0]


def test_nothing_to_calibrate_on_falls_back_to_float32(brightness_files):
    empty = np.zeros((0, 4, 4, 1), np.uint8)
    choice = quantize_and_check(brightness_files, BRIGHTNESS, SETTINGS,
                                CalibrationSample(empty, empty, None, INPUT), BOUNDS)
    assert (choice.precision, choice.check) == (FLOAT32, None)
    assert choice.fallback == ("no images to calibrate on or check with (input: 0 images to "
                               "calibrate, 0 to check)")


def test_calibration_sample_round_trips_through_its_file():
    sample = CalibrationSample(levels(1, 2), levels(3, 4, 5), np.array([0, 2, 1]), ARTIFACT)
    back = CalibrationSample.from_npz(sample.to_npz())
    np.testing.assert_array_equal(back.calibration, sample.calibration)
    np.testing.assert_array_equal(back.check, sample.check)
    assert back.check_labels.tolist() == [0, 2, 1] and back.source == ARTIFACT
    unlabeled = CalibrationSample.from_npz(
        CalibrationSample(levels(1), levels(2), None, INPUT).to_npz())
    assert unlabeled.check_labels is None


def test_precision_line_says_what_ran_and_why():
    report = RunReport(run_id="r", source="s", output_uri="o", model="m")
    assert precision_line(report) is None  # float32, as asked
    report.precision, report.int8_calibration, report.int8_check = \
        INT8, "artifact: 200 images to calibrate, 700 labeled to check", "top-1 agreement ..."
    report.int8_accuracy, report.float32_accuracy = 0.95, 0.975
    assert precision_line(report) == (
        "  precision            int8 (artifact: 200 images to calibrate, 700 labeled to check; "
        "top-1 agreement ..., accuracy int8 0.9500 float32 0.9750)")
    report.precision, report.int8_fallback = FLOAT32, "the int8 conversion failed: X"
    assert precision_line(report) == ("  precision            float32 (int8 not used: the int8 "
                                      "conversion failed: X)")


# In a new interpreter with TMPDIR set by the test: the int8 conversion and check as the driver
# runs them, then a model load as a Python worker does, each followed by the temporary
# directory's entries; then the process ends as Spark's Python workers do, with os._exit, so
# nothing registered with atexit runs.
_LOAD_AND_EXIT = """
import os, pickle, sys, tempfile
from imagegraph.infer.precision import quantize_and_check
from imagegraph.model.cache import ModelCache

files, metadata, settings, sample, bounds = pickle.loads(sys.stdin.buffer.read())
assert quantize_and_check(files, metadata, settings, sample, bounds).precision == "int8"
print(sorted(os.listdir(tempfile.gettempdir())), flush=True)
ModelCache().get(metadata, files, 4, runtime="tensorflow")
print(sorted(os.listdir(tempfile.gettempdir())), flush=True)
os._exit(0)
"""


def test_the_int8_check_and_a_model_load_leave_no_temporary_file(brightness_files, tmp_path):
    """Each used to leave AutoGraph's generated files (`__autograph_generated_file*.py`)
    until a normal exit, and a worker's for good."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    sample = CalibrationSample(levels(*range(0, 256, 16)), levels(*range(0, 256, 5)), None,
                               INPUT)
    child = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_EXIT],
        input=pickle.dumps((brightness_files, BRIGHTNESS, SETTINGS, sample, BOUNDS)),
        env={**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, timeout=300)
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    assert child.stdout.decode().splitlines() == ["[]", "[]"]
    assert os.listdir(scratch) == []
