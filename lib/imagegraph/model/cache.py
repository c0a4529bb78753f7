"""Loads a model once per Python worker and keeps it for every later task and batch.

The driver ships the artifact's files as a broadcast of {relative file name: bytes}; the first
batch in a worker writes them to a local directory and loads the Keras model or SavedModel.
Spark reuses Python workers (`spark.python.worker.reuse`, on by default), so later tasks find
the model already loaded. With int8 precision the files also hold `INT8_MODEL_FILE`, the model
the driver converted with full integer quantization (`quantize_int8`) and checked; the worker
runs that flatbuffer and loads nothing else. Each load prints one line on the worker's stderr
(the executor's log: on EMR the container's stderr), naming the worker's pid and Python, e.g.
`imagegraph: model digits@v1 loaded in python worker 4711 (/mnt/.../environment) in 3.1 s`
(a JSON object with it as its message when the job logs JSON: `logs.worker_line`).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

from imagegraph.logs import worker_line
from imagegraph.model.artifact import (
    MODEL_FILE,
    SAVED_MODEL,
    SAVED_MODEL_DIR,
    ModelMetadata,
    model_format,
    preprocess,
)
from imagegraph.model.tensorflow_output import quiet_tensorflow

INT8_MODEL_FILE = "model.int8.tflite"
"""The int8 TensorFlow Lite model among the shipped files (never part of an artifact)."""
RAW_PIXEL_FAMILIES = ("scale_0_1", "mobilenet_v2", "efficientnet")
"""Families whose preprocessing is one affine map for every channel: their int8 model takes the
decoder's uint8 pixels as its quantized input, the preprocessing folded into the input's scale
and zero point. Other families' int8 models take the preprocessed float images."""


class LoadedModel:
    """A classifier behind one compiled function of a fixed batch size.

    `model` is a Keras model, or a SavedModel as `tf.saved_model.load` returns it whose
    `serving_default` signature maps one float input (the preprocessed images) to one output
    (the class probabilities), or the bytes of a TensorFlow Lite model converted for this
    batch size (`quantize_int8`), which runs on TensorFlow Lite whatever `runtime` says.
    `predict(pixels)` takes uint8 pixels (n, height, width, channels), n <= batch_size, pads
    them to `batch_size` so the function is traced once, applies the model family's
    preprocessing (inside the graph, or folded into an int8 model's input), and returns
    (probabilities (n, classes), embeddings (n, features) or None). With `embedding` (Keras
    models only), the embedding is the penultimate layer's output. `runtime` 'tensorflow' runs
    a `tf.function`; 'tflite' converts the same graph once to TensorFlow Lite and runs it with
    the XNNPACK CPU kernels on `threads` threads (0: all). Raises `ValueError` for a model it
    cannot run so.
    """

    def __init__(self, model, metadata: ModelMetadata, batch_size: int, embedding: bool,
                 runtime: str = "tensorflow", threads: int = 0):
        import tensorflow as tf

        self.batch_size = batch_size
        self.embedding = embedding
        shape = (batch_size, metadata.input_height, metadata.input_width, metadata.channels)
        if isinstance(model, bytes):
            self._run = _tflite_function(model, metadata.preprocessing, threads)
            return
        if isinstance(model, tf.keras.Model):
            network = with_embedding(model, shape[1:]) if embedding else model
            if runtime == "tflite":
                self._run = _tflite_function(
                    _keras_converter(network, metadata, shape).convert(),
                    metadata.preprocessing, threads)
                return

            def forward(images):
                return network(images, training=False)
        elif embedding:
            raise ValueError("embedding needs a Keras model: a SavedModel's serving signature "
                             "gives only the probabilities, no penultimate layer")
        else:
            forward = _serving_function(model, shape)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8)])
        def run(pixels):
            return forward(preprocess(pixels, metadata.preprocessing))

        if runtime == "tflite":  # a SavedModel: this function's graph, its variables frozen
            run = _tflite_function(tf.lite.TFLiteConverter.from_concrete_functions(
                [run.get_concrete_function()], model).convert(), metadata.preprocessing, threads)
        self._run = run
        self._model = model  # a SavedModel's signature holds its variables only weakly

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        count = len(pixels)
        if count > self.batch_size:
            raise ValueError(f"{count} images in a batch of at most {self.batch_size}")
        if count < self.batch_size:
            padding = np.zeros((self.batch_size - count, *pixels.shape[1:]), np.uint8)
            pixels = np.concatenate([pixels, padding])
        outputs = self._run(pixels)
        if not self.embedding:
            return np.asarray(outputs)[:count], None
        probabilities, embeddings = outputs
        return np.asarray(probabilities)[:count], np.asarray(embeddings)[:count]


def _serving_function(saved_model, shape: tuple):
    """The `serving_default` signature of `saved_model` as a function of float images of
    `shape` -> probabilities; `ValueError` when it does not have that form."""
    import tensorflow as tf

    signature = saved_model.signatures.get("serving_default")
    if signature is None:
        raise ValueError("the SavedModel has no serving_default signature "
                         f"(it has: {', '.join(saved_model.signatures) or 'none'})")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"the SavedModel's serving_default signature takes {sorted(inputs)} and "
                         f"returns {sorted(outputs)}: expected one input, the preprocessed "
                         "images, and one output, the class probabilities")
    ((input_name, spec),) = inputs.items()
    (output_name,) = outputs
    if not spec.shape.is_compatible_with(shape):
        raise ValueError(f"the SavedModel takes input of shape {spec.shape}, not the "
                         f"{shape[1:]} images metadata.json describes")

    def forward(images):
        return signature(**{input_name: tf.cast(images, spec.dtype)})[output_name]

    return forward


def _keras_converter(network, metadata: ModelMetadata, shape: tuple):
    """A TensorFlow Lite converter of the Keras `network` behind the model family's
    preprocessing, for uint8 input of `shape`."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape[1:], batch_size=shape[0], dtype="uint8")
    scaled = tf.keras.layers.Lambda(lambda p: preprocess(p, metadata.preprocessing))(inputs)
    return tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, network(scaled)))


def quantize_int8(files: dict[str, bytes], metadata: ModelMetadata, batch_size: int,
                  embedding: bool, calibration: np.ndarray, threads: int = 0) -> bytes:
    """The model of the artifact `files` converted to TensorFlow Lite with full integer
    quantization: int8 weights and activations on int8 kernels only, the activation ranges
    calibrated on `calibration` (uint8 pixels (n, height, width, channels), n >= 1) plus one
    black and one white image, float32 probabilities (and embeddings) out, for batches of
    `batch_size`. A family of `RAW_PIXEL_FAMILIES` takes the decoder's uint8 pixels as input.

    Raises what the converter raises (`ConverterError` for an operation without int8 kernels),
    and `ValueError` when raw pixels would not be the family's input to within half a
    quantization step."""
    shape = (1, metadata.input_height, metadata.input_width, metadata.channels)
    samples = np.concatenate([np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8),
                              calibration])
    return convert_int8(int8_converter(files, metadata, batch_size, embedding, samples,
                                       threads), metadata)


def convert_int8(converter, metadata: ModelMetadata) -> bytes:
    """The flatbuffer of `converter` (`int8_converter`'s, calibrated) with int8 kernels only; a
    family of `RAW_PIXEL_FAMILIES` takes uint8 pixels as input (`ValueError` when they would
    not be its input to within half a quantization step), others the preprocessed floats."""
    import tensorflow as tf

    raw_pixels = metadata.preprocessing in RAW_PIXEL_FAMILIES
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if raw_pixels else tf.float32
    flatbuffer = converter.convert()
    if raw_pixels:
        _check_raw_pixel_input(flatbuffer, metadata)
    return flatbuffer


def int8_converter(files: dict[str, bytes], metadata: ModelMetadata, batch_size: int,
                   embedding: bool, samples: np.ndarray, threads: int = 0):
    """A `tf.lite.TFLiteConverter` of the model of the artifact `files` (with `embedding`, its
    penultimate layer's output too) for float input, the family's preprocessed images, in
    batches of `batch_size`, set to quantize (`tf.lite.Optimize.DEFAULT`) with the activation
    ranges calibrated on exactly `samples` (uint8 pixels (n, height, width, channels), n >= 1;
    the last batch filled by repeats). Which kernels, input type and quantizer options it
    converts with are the caller's to set."""
    import tensorflow as tf

    model = _load_model(files, threads)
    shape = (batch_size, metadata.input_height, metadata.input_width, metadata.channels)
    if isinstance(model, tf.keras.Model):
        network = with_embedding(model, shape[1:]) if embedding else model
        inputs = tf.keras.Input(shape[1:], batch_size=batch_size)
        converter = tf.lite.TFLiteConverter.from_keras_model(
            tf.keras.Model(inputs, network(inputs)))
    else:
        forward = _serving_function(model, shape)
        function = tf.function(forward, input_signature=[tf.TensorSpec(shape, tf.float32)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration_batches(samples, metadata, batch_size)
    return converter


def calibration_batches(samples: np.ndarray, metadata: ModelMetadata, batch_size: int):
    """A representative dataset of `samples` (uint8 pixels (n, height, width, channels)): a
    function yielding them preprocessed for `metadata`'s family, one list of a float32 array of
    `batch_size` images a batch (the last batch filled by repeats)."""
    shape = (batch_size, metadata.input_height, metadata.input_width, metadata.channels)

    def batches():
        for start in range(0, len(samples), batch_size):
            batch = np.resize(samples[start:start + batch_size], shape)
            yield [np.asarray(preprocess(batch, metadata.preprocessing))]

    return batches


def _check_raw_pixel_input(flatbuffer: bytes, metadata: ModelMetadata) -> None:
    """`ValueError` unless the uint8 input of the TensorFlow Lite model `flatbuffer`, read as
    its scale and zero point say, is the family's preprocessing of each level 0..255 to within
    half a quantization step (what quantizing the preprocessed image would lose anyway)."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its move to LiteRT
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    levels = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1)
    exact = np.asarray(preprocess(np.repeat(levels, metadata.channels, axis=3),
                                  metadata.preprocessing))[..., 0].ravel()
    error = float(np.max(np.abs((np.arange(256) - zero_point) * scale - exact)))
    if error > scale / 2 * 1.001:
        raise ValueError(f"the int8 model's uint8 input (scale {scale:.6g}, zero point "
                         f"{zero_point}) is off the {metadata.preprocessing} preprocessing of "
                         f"raw pixels by up to {error:.4g}")


def _tflite_function(flatbuffer: bytes, preprocessing: str, threads: int):
    """The TensorFlow Lite model `flatbuffer` run by an interpreter on `threads` threads (0:
    all); returns a function of uint8 pixels -> its output(s). A model of float input is fed
    the family's `preprocessing` of the pixels; one of uint8 input, the pixels themselves."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its move to LiteRT
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads or None)
    runner = interpreter.get_signature_runner()
    ((input_name, input_details),) = runner.get_input_details().items()
    output_names = sorted(runner.get_output_details())  # output_0, output_1: Keras's order
    takes_pixels = input_details["dtype"] == np.uint8

    def run(pixels: np.ndarray):
        if not takes_pixels:
            pixels = np.asarray(preprocess(pixels, preprocessing))
        outputs = runner(**{input_name: pixels})
        values = tuple(outputs[name] for name in output_names)
        return values if len(values) > 1 else values[0]

    return run


def with_embedding(keras_model, input_shape: tuple):
    """A model of inputs of `input_shape` (height, width, channels) with two outputs: the
    classifier's, and its penultimate layer's (the embedding)."""
    import tensorflow as tf

    if isinstance(keras_model, tf.keras.Sequential):  # no graph of its own to tap: rebuild one
        inputs = tf.keras.Input(input_shape)
        features = inputs
        for layer in keras_model.layers[:-1]:
            features = layer(features)
        return tf.keras.Model(inputs, [keras_model.layers[-1](features), features])
    return tf.keras.Model(keras_model.inputs,
                          [keras_model.outputs[0], keras_model.layers[-2].output])


LOAD_LINE_PREFIX = "imagegraph: model"
"""How the line a worker prints when it loads a model begins."""


class ModelCache:
    """Loaded models by key, loaded at most once per process. `loads` counts real loads."""

    def __init__(self):
        self._models: dict[tuple, LoadedModel] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def __len__(self) -> int:
        """How many models are held (each was loaded once: then `loads == len(cache)`)."""
        return len(self._models)

    def get(self, metadata: ModelMetadata, files: dict[str, bytes], batch_size: int,
            embedding: bool = False, threads: int = 0, runtime: str = "tensorflow",
            precision: str = "float32") -> LoadedModel:
        """The model of `metadata`, loading it from `files` (name -> bytes) the first time.

        `threads` > 0 sizes TensorFlow's thread pools before its first use in this process.
        `precision` 'int8' runs `files[INT8_MODEL_FILE]` (converted for this `batch_size`).
        """
        key = (metadata.model_id, metadata.uri, batch_size, embedding, runtime, precision)
        with self._lock:
            if key not in self._models:
                # TensorFlow's conversion dumps and native log lines kept out of the job's log;
                # one image run here, where TensorFlow Lite announces its XNNPACK delegate
                started = time.monotonic()
                with quiet_tensorflow():
                    model = files[INT8_MODEL_FILE] if precision == "int8" else \
                        _load_model(files, threads)
                    loaded = LoadedModel(model, metadata, batch_size, embedding, runtime,
                                         threads)
                    loaded.predict(np.zeros((1, metadata.input_height, metadata.input_width,
                                             metadata.channels), np.uint8))
                self._models[key] = loaded
                self.loads += 1
                print(worker_line(__name__, f"{LOAD_LINE_PREFIX} {metadata.tag} loaded in "
                                  f"python worker {os.getpid()} ({sys.prefix}) in "
                                  f"{time.monotonic() - started:.1f} s"),
                      file=sys.stderr, flush=True)
            return self._models[key]


def _load_model(files: dict[str, bytes], threads: int):
    """The Keras model or SavedModel of the artifact `files` ({relative name: bytes}), written
    to a local directory first; `ValueError` when they hold neither or both."""
    kind = model_format(files)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no start-up banner per worker
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran in this process: its pools stay as they are
            pass
    with tempfile.TemporaryDirectory(prefix="imagegraph-model-") as directory:
        for name, content in files.items():
            path = os.path.join(directory, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(content)
        # both loaders read the variables into memory: the files can go
        if kind == SAVED_MODEL:
            return tf.saved_model.load(os.path.join(directory, SAVED_MODEL_DIR))
        return tf.keras.models.load_model(os.path.join(directory, MODEL_FILE), compile=False)


WORKER_MODELS = ModelCache()
"""The one cache of this Python worker process."""
