"""The networks training builds: a small CNN trained from scratch, or a Keras application
(MobileNetV2, EfficientNetB0, ResNet50) without its top, under a new classification head.

`build_classifier` builds either (weights from ImageNet, from a Keras weights file of the
backbone, or random); `freeze_backbone` and `unfreeze_top` set which layers train in the two
phases of fine-tuning. Models take the family's preprocessed float32 input (`PREPROCESSING`,
applied by `model.artifact.preprocess` at training and inference alike) and output softmax
probabilities.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

BACKBONE_LAYER = "backbone"
"""The name of the application sub-model inside a classifier built on one."""
PREPROCESSING = {"small_cnn": "scale_0_1", "mobilenet_v2": "mobilenet_v2",
                 "efficientnet_b0": "efficientnet", "resnet50": "resnet50"}
"""Each base's input convention, as `metadata.json` records it for inference."""
_APPLICATIONS = {"mobilenet_v2": "MobileNetV2", "efficientnet_b0": "EfficientNetB0",
                 "resnet50": "ResNet50"}
MIN_APPLICATION_SIZE = 32
"""Keras applications accept inputs of at least 32x32 pixels."""
_EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)
"""keras.applications.efficientnet.IMAGENET_STDDEV_RGB: with weights="imagenet" Keras adds a
`Rescaling(1 / sqrt(stddev))` after the input normalization, which a weights file cannot
carry (the layer has no weights)."""


def application_backbone(base: str, height: int, width: int, weights: str | None):
    """The Keras application `base` without its top, global-average-pooled, for RGB input of
    (height, width) pixels; `weights` is None (random), 'imagenet' (Keras downloads the file:
    needs internet) or the local path of a Keras weights file (`.weights.h5`) of this very
    backbone, as `save_weights` writes it (for EfficientNet, ImageNet's: the input scaling Keras
    adds for "imagenet" is folded into the loaded normalization, so both give one network)."""
    import tensorflow as tf

    constructor = getattr(tf.keras.applications, _APPLICATIONS[base])
    backbone = constructor(include_top=False, pooling="avg", input_shape=(height, width, 3),
                           weights="imagenet" if weights == "imagenet" else None)
    if weights not in (None, "imagenet"):
        backbone.load_weights(weights)
        if base == "efficientnet_b0":
            _fold_imagenet_rescaling(backbone)
    return backbone


def _fold_imagenet_rescaling(backbone) -> None:
    """Scale EfficientNet's input normalization as the missing `Rescaling(1 / sqrt(stddev))`
    would: (x - mean) / sqrt(variance * stddev) = (x - mean) / sqrt(variance) / sqrt(stddev)."""
    import tensorflow as tf

    normalization = next(layer for layer in backbone.layers
                         if isinstance(layer, tf.keras.layers.Normalization))
    normalization.adapt_variance.assign(normalization.adapt_variance
                                        * tf.constant(_EFFICIENTNET_STDDEV_RGB))
    normalization.finalize_state()


def build_classifier(base: str, height: int, width: int, channels: int, num_classes: int,
                     weights: str | None):
    """An uncompiled Keras model: (batch, height, width, channels) preprocessed float32 ->
    (batch, num_classes) probabilities. `weights` as in `application_backbone` (ignored by
    `small_cnn`, which always starts from random weights)."""
    import tensorflow as tf

    layers = tf.keras.layers
    if base == "small_cnn":
        return tf.keras.Sequential([
            layers.Input(shape=(height, width, channels)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ])
    backbone = application_backbone(base, height, width, weights)
    backbone.name = BACKBONE_LAYER
    inputs = layers.Input(shape=(height, width, channels))
    # Keras 3 passes the outer call's `training` to nested models, so a backbone trained from
    # scratch learns its batch-norm statistics; a pretrained one keeps them because its batch
    # norm layers are frozen (freeze_backbone, unfreeze_top), which runs them in inference mode
    features = backbone(inputs)
    outputs = layers.Dense(num_classes, activation="softmax")(layers.Dropout(0.2)(features))
    return tf.keras.Model(inputs, outputs)


def freeze_backbone(model) -> None:
    """The first phase of fine-tuning: only the head trains."""
    model.get_layer(BACKBONE_LAYER).trainable = False


def unfreeze_top(model, layer_count: int) -> None:
    """The second phase: the top `layer_count` layers of the backbone (counted in
    `backbone.layers`, as Keras's transfer-learning guide counts them) train too, batch
    normalisation layers excepted (they stay frozen, as the guide advises). More layers than the
    backbone has means all of them, as `layers[-layer_count:]` would in Python, and is logged."""
    import tensorflow as tf

    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = True
    total = len(backbone.layers)
    if layer_count > total:
        log.warning("unfreeze_layers is %d but the backbone has %d layers: all %d train",
                    layer_count, total, total)
    top = backbone.layers[max(0, total - layer_count):] if layer_count else []
    for layer in backbone.layers:
        layer.trainable = (layer in top
                           and not isinstance(layer, tf.keras.layers.BatchNormalization))
