"""The model as training exports it and inference loads it: a directory (any Hadoop URI) with

    model.keras     the Keras model (what training writes), or instead
    saved_model/    a TensorFlow SavedModel (saved_model.pb, variables/, ...) whose
                    `serving_default` signature maps the preprocessed input to probabilities
    labels.json     the class names, in output-index order
    metadata.json   name, version, input size, preprocessing, classes, metrics, how it
                    was trained (base network, weights, epochs, workers), its lineage
                    (training input, data fingerprint, code version, settings) and its
                    embedding centre (the mean penultimate-layer output of its validation
                    images, subtracted from every embedding inference writes)

`ModelMetadata` is that metadata; `preprocess` turns uint8 pixels into the model's input;
`model_format` says which kind of model an artifact holds.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_FILE = f"{SAVED_MODEL_DIR}/saved_model.pb"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
ARTIFACT_FILES = (MODEL_FILE, LABELS_FILE, METADATA_FILE)
"""The files training writes."""
KERAS = "keras"
SAVED_MODEL = "saved_model"
"""The kinds of model an artifact holds (see `model_format`)."""
PREPROCESSING = ("scale_0_1", "mobilenet_v2", "resnet50", "efficientnet")
"""Model families' input conventions: `scale_0_1` divides by 255; the others are the Keras
application preprocess functions of that family (MobileNetV2: [-1, 1]; ResNet50: BGR with the
ImageNet means subtracted; EfficientNet: raw 0..255, the model rescales)."""


@dataclass(frozen=True)
class ModelMetadata:
    """What inference needs to know about a model. Sizes are pixels; channels is 1 or 3;
    `training` describes the training run (base, weights, epochs, workers), for people;
    `lineage` what made the model (`imagegraph.train.lineage`), empty when not trained here;
    `embedding_centre` the mean embedding (penultimate-layer output, one float per feature) of
    the validation images, measured by training, empty for a model trained before it was
    (see `centred`)."""

    name: str
    version: str
    input_height: int
    input_width: int
    channels: int
    preprocessing: str
    classes: tuple[str, ...]
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    embedding_centre: tuple[float, ...] = ()
    uri: str = ""

    @property
    def model_id(self) -> str:
        """The model vertex id, `model:<name>@<version>`."""
        return f"model:{self.name}@{self.version}"

    @property
    def tag(self) -> str:
        """`<name>@<version>`, as written on images and edges."""
        return f"{self.name}@{self.version}"

    def centred(self, embeddings: np.ndarray) -> np.ndarray:
        """`embeddings` (n, features) less `embedding_centre`, float32; unchanged (as float32)
        without one. A post-ReLU embedding is all non-negative: uncentred, any two lie within
        90 degrees and most random hyperplanes put them on the same side, so the link job's
        signatures of unrelated images agree in most bits. One fixed centre per model keeps
        the embeddings of every run and shard of that model comparable."""
        vectors = np.asarray(embeddings, np.float32)
        if not self.embedding_centre:
            return vectors
        return vectors - np.asarray(self.embedding_centre, np.float32)

    def to_json(self) -> str:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["embedding_centre"] = list(self.embedding_centre)
        data.pop("uri")
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, uri: str = "") -> "ModelMetadata":
        data = json.loads(text)
        data["classes"] = tuple(data["classes"])
        data["embedding_centre"] = tuple(data.get("embedding_centre", ()))
        data.pop("uri", None)
        metadata = cls(**data, uri=uri)
        if metadata.preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {metadata.preprocessing!r} "
                             f"(known: {', '.join(PREPROCESSING)})")
        return metadata


def model_format(names) -> str:
    """`KERAS` or `SAVED_MODEL`: the kind of model among an artifact's file `names` (relative,
    '/'-separated). Raises `ValueError`, saying what was expected, when it holds neither or both.
    """
    found = [kind for kind, marker in ((KERAS, MODEL_FILE), (SAVED_MODEL, SAVED_MODEL_FILE))
             if marker in names]
    if len(found) == 1:
        return found[0]
    held = f"both {MODEL_FILE} and" if found else f"neither {MODEL_FILE} nor"
    raise ValueError(f"{held} {SAVED_MODEL_FILE}: expected exactly one model, a Keras file "
                     f"{MODEL_FILE} or a SavedModel in {SAVED_MODEL_DIR}/")


def preprocess(pixels, preprocessing: str):
    """uint8 pixels (batch, height, width, channels), as a NumPy array or a tensor, -> the
    float32 model input of that family."""
    import tensorflow as tf

    images = tf.cast(pixels, tf.float32)
    if preprocessing == "scale_0_1":
        return images / 255.0
    applications = tf.keras.applications
    family = {"mobilenet_v2": applications.mobilenet_v2, "resnet50": applications.resnet50,
              "efficientnet": applications.efficientnet}.get(preprocessing)
    if family is None:
        raise ValueError(f"unknown preprocessing {preprocessing!r}")
    return family.preprocess_input(images)


def write_artifact(directory: str, model, metadata: ModelMetadata) -> None:
    """Write the three artifact files of `model` (a Keras model) into local `directory`."""
    os.makedirs(directory, exist_ok=True)
    model.save(os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, LABELS_FILE), "w", encoding="utf-8") as handle:
        json.dump(list(metadata.classes), handle)
    with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8") as handle:
        handle.write(metadata.to_json())
