"""Backbones built as Keras builds them: EfficientNet from a weights file normalizes its input as
with weights="imagenet"; a backbone trained from scratch learns its batch-norm statistics and a
pretrained one keeps them in both phases of fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest

from imagegraph.train.backbones import (
    BACKBONE_LAYER,
    application_backbone,
    build_classifier,
    freeze_backbone,
    unfreeze_top,
)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STDDEV = np.array([0.229, 0.224, 0.225], np.float32)


def _normalized(backbone, pixels: np.ndarray) -> np.ndarray:
    """The backbone's input after its Normalization layer and, where Keras adds it, the
    Rescaling that follows."""
    import tensorflow as tf

    names = [layer.name for layer in backbone.layers]
    after = names.index(next(layer.name for layer in backbone.layers
                             if isinstance(layer, tf.keras.layers.Normalization)))
    if isinstance(backbone.layers[after + 1], tf.keras.layers.Rescaling):
        after += 1
    return tf.keras.Model(backbone.input, backbone.layers[after].output)(pixels).numpy()


def test_efficientnet_from_a_weights_file_scales_its_input_as_imagenet_weights_do(tmp_path):
    import tensorflow as tf

    source = tf.keras.applications.EfficientNetB0(include_top=False, pooling="avg",
                                                  input_shape=(32, 32, 3), weights=None)
    normalization = next(layer for layer in source.layers
                         if isinstance(layer, tf.keras.layers.Normalization))
    normalization.adapt_mean.assign(MEAN)  # ImageNet's, as in Keras's weights file
    normalization.adapt_variance.assign(STDDEV ** 2)
    path = str(tmp_path / "efficientnetb0_notop.weights.h5")
    source.save_weights(path)

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    backbone = application_backbone("efficientnet_b0", 32, 32, path)
    # what keras.applications.EfficientNetB0(weights="imagenet") computes before its stem
    expected = (pixels / 255.0 - MEAN) / STDDEV / np.sqrt(STDDEV)
    np.testing.assert_allclose(_normalized(backbone, pixels), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("phase, learns", [("from scratch", True), ("head", False),
                                           ("fine-tune", False)])
def test_batch_norm_statistics_are_learned_from_scratch_and_kept_when_pretrained(
        tmp_path, phase, learns):
    import tensorflow as tf

    weights = None
    if phase != "from scratch":
        weights = str(tmp_path / "mobilenet_v2_notop.weights.h5")
        application_backbone("mobilenet_v2", 32, 32, None).save_weights(weights)
    model = build_classifier("mobilenet_v2", 32, 32, 3, 2, weights)
    if phase != "from scratch":  # as the training loop does
        freeze_backbone(model)
    if phase == "fine-tune":
        unfreeze_top(model, 1000)
    norm = next(layer for layer in model.get_layer(BACKBONE_LAYER).layers
                if isinstance(layer, tf.keras.layers.BatchNormalization))
    before = norm.moving_mean.numpy().copy()
    model(np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32),
          training=True)
    assert (not np.allclose(norm.moving_mean.numpy(), before)) is learns


@pytest.mark.parametrize("asked, trained", [
    (0, []),
    (4, ["Conv2D", "ReLU", "GlobalAveragePooling2D"]),  # Conv_1's batch norm stays frozen
    (155, 103),  # MobileNetV2 without its top: 155 layers, 52 of them batch normalisation
    (200, 103),  # more than there are: all of them, as layers[-200:] gives
])
def test_unfreeze_top_trains_the_top_layers_asked_for_or_all_of_them(asked, trained, caplog):
    model = build_classifier("mobilenet_v2", 32, 32, 3, 2, None)
    freeze_backbone(model)
    unfreeze_top(model, asked)
    kinds = [type(layer).__name__ for layer in model.get_layer(BACKBONE_LAYER).layers
             if layer.trainable]
    assert (kinds if isinstance(trained, list) else len(kinds)) == trained
    warned = [record.getMessage() for record in caplog.records
              if record.name == "imagegraph.train.backbones"]
    assert warned == (["unfreeze_layers is 200 but the backbone has 155 layers: all 155 train"]
                      if asked == 200 else [])
