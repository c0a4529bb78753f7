"""Loads a model once per Python worker and keeps it for every later task and batch.

The driver ships the artifact's files as a broadcast of {file name: bytes}; the first batch in a
worker writes them to a local directory and loads the Keras model. Spark reuses Python workers
(`spark.python.worker.reuse`, on by default), so later tasks find the model already loaded.
"""
from __future__ import annotations

import os
import tempfile
import threading

from imagegraph.model_artifact import MODEL_FILE


class ModelCache:
    """Keras models by key, loaded at most once per process. `loads` counts real loads."""

    def __init__(self):
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, key: str, files: dict[str, bytes], threads: int = 0):
        """The Keras model for `key`, loading it from `files` (name -> bytes) the first time.

        `threads` > 0 sizes TensorFlow's thread pools before its first use in this process.
        """
        with self._lock:
            if key not in self._models:
                self._models[key] = self._load(files, threads)
                self.loads += 1
            return self._models[key]

    @staticmethod
    def _load(files: dict[str, bytes], threads: int):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no start-up banner per worker
        import tensorflow as tf

        if threads > 0 and not _tf_threads_configured():
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        directory = tempfile.mkdtemp(prefix="imagegraph-model-")
        for name, content in files.items():
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(content)
        return tf.keras.models.load_model(os.path.join(directory, MODEL_FILE), compile=False)


def _tf_threads_configured() -> bool:
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() != 0


WORKER_MODELS = ModelCache()
"""The one cache of this Python worker process."""
