"""Loads a model once per Python worker and keeps it for every later task and batch.

The driver ships the artifact's files as a broadcast of {file name: bytes}; the first batch in a
worker writes them to a local directory and loads the Keras model. Spark reuses Python workers
(`spark.python.worker.reuse`, on by default), so later tasks find the model already loaded.
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings

import numpy as np

from imagegraph.model_artifact import MODEL_FILE, ModelMetadata, preprocess


class LoadedModel:
    """A Keras classifier behind one compiled function of a fixed batch size.

    `predict(pixels)` takes uint8 pixels (n, height, width, channels), n <= batch_size, pads
    them to `batch_size` so the function is traced once, applies the model family's
    preprocessing inside the graph, and returns (probabilities (n, classes), embeddings
    (n, features) or None). With `embedding`, the embedding is the penultimate layer's output.
    `runtime` 'tensorflow' runs a `tf.function`; 'tflite' converts the same graph once to
    TensorFlow Lite and runs it with the XNNPACK CPU kernels on `threads` threads (0: all).
    """

    def __init__(self, keras_model, metadata: ModelMetadata, batch_size: int, embedding: bool,
                 runtime: str = "tensorflow", threads: int = 0):
        import tensorflow as tf

        self.batch_size = batch_size
        self.embedding = embedding
        shape = (batch_size, metadata.input_height, metadata.input_width, metadata.channels)
        network = _with_embedding(keras_model, shape[1:]) if embedding else keras_model
        if runtime == "tflite":
            self._run = _tflite_function(network, metadata, shape, threads)
            return

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8)])
        def run(pixels):
            return network(preprocess(pixels, metadata.preprocessing), training=False)

        self._run = run

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


def _tflite_function(network, metadata: ModelMetadata, shape: tuple, threads: int):
    """`network` behind the model family's preprocessing, converted to TensorFlow Lite for
    uint8 input of `shape`; returns a function of pixels -> the network's output(s)."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape[1:], batch_size=shape[0], dtype="uint8")
    scaled = tf.keras.layers.Lambda(lambda p: preprocess(p, metadata.preprocessing))(inputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, network(scaled)))
    with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its move to LiteRT
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=converter.convert(),
                                          num_threads=threads or None)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    output_names = sorted(runner.get_output_details())  # output_0, output_1: Keras's order

    def run(pixels: np.ndarray):
        outputs = runner(**{input_name: pixels})
        values = tuple(outputs[name] for name in output_names)
        return values if len(values) > 1 else values[0]

    return run


def _with_embedding(keras_model, input_shape: tuple):
    """A model with two outputs: the classifier's, and its penultimate layer's."""
    import tensorflow as tf

    if isinstance(keras_model, tf.keras.Sequential):  # no graph of its own to tap: rebuild one
        inputs = tf.keras.Input(input_shape)
        features = inputs
        for layer in keras_model.layers[:-1]:
            features = layer(features)
        return tf.keras.Model(inputs, [keras_model.layers[-1](features), features])
    return tf.keras.Model(keras_model.inputs,
                          [keras_model.outputs[0], keras_model.layers[-2].output])


class ModelCache:
    """Loaded models by key, loaded at most once per process. `loads` counts real loads."""

    def __init__(self):
        self._models: dict[tuple, LoadedModel] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, metadata: ModelMetadata, files: dict[str, bytes], batch_size: int,
            embedding: bool = False, threads: int = 0,
            runtime: str = "tensorflow") -> LoadedModel:
        """The model of `metadata`, loading it from `files` (name -> bytes) the first time.

        `threads` > 0 sizes TensorFlow's thread pools before its first use in this process.
        """
        key = (metadata.model_id, metadata.uri, batch_size, embedding, runtime)
        with self._lock:
            if key not in self._models:
                keras_model = _load_keras(files, threads)
                self._models[key] = LoadedModel(keras_model, metadata, batch_size, embedding,
                                                runtime, threads)
                self.loads += 1
            return self._models[key]


def _load_keras(files: dict[str, bytes], threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no start-up banner per worker
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran in this process: its pools stay as they are
            pass
    directory = tempfile.mkdtemp(prefix="imagegraph-model-")
    for name, content in files.items():
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(content)
    return tf.keras.models.load_model(os.path.join(directory, MODEL_FILE), compile=False)


WORKER_MODELS = ModelCache()
"""The one cache of this Python worker process."""
