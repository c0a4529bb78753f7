"""The training loop itself on a tiny network built as a pretrained one is (a backbone model
under a softmax head), fed synthetic batches and scripted held-out losses: the learning rate of
every optimizer step, and the weights fine-tuning starts from."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from imagegraph.config import S3Config
from imagegraph.train import loop
from imagegraph.train.backbones import BACKBONE_LAYER
from imagegraph.train.checkpoints import CheckpointStore
from imagegraph.train.data import FeedSpec

HELD_OUT_LOSSES = [0.5, 0.9, 0.4]
"""Per epoch: the head's first epoch is its best, its second worse; then one fine-tuning epoch."""


@contextlib.contextmanager
def synthetic_batches(_data, feed: FeedSpec, training: bool, shard: int = 0,
                      shard_count: int = 1):
    """What `tf_batches` yields: (images, labels, weights) batches, endless for training."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (feed.batch_size, *feed.shape)).astype(np.float32)
    labels = np.zeros(feed.batch_size, np.int32)  # one class: the head's bias moves each step
    batch = tf.data.Dataset.from_tensors((images, labels, np.ones(feed.batch_size, np.float32)))
    yield batch.repeat() if training else batch


def tiny_classifier(base: str, height: int, width: int, channels: int, num_classes: int,
                    weights: str | None):
    """`build_classifier`'s layout in small: a `backbone` sub-model under a softmax head."""
    import tensorflow as tf

    layers = tf.keras.layers
    backbone = tf.keras.Sequential([layers.Input(shape=(height, width, channels)),
                                    layers.Conv2D(4, 3, activation="relu"),
                                    layers.GlobalAveragePooling2D()], name=BACKBONE_LAYER)
    inputs = layers.Input(shape=(height, width, channels))
    return tf.keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(
        backbone(inputs)))


def test_each_phase_warms_up_decays_and_fine_tunes_from_the_heads_best_epoch(tmp_path,
                                                                          monkeypatch):
    plan = loop.TrainingPlan(
        base="mobilenet_v2", weights="pretrained.weights.h5", num_classes=2,
        feed=FeedSpec((8, 8, 3), "float32", "mobilenet_v2", 4, (1.0, 1.0)), epochs=2,
        fine_tune_epochs=1, unfreeze_layers=5, learning_rate=0.01,
        fine_tune_learning_rate=0.001, warmup_epochs=1.0, final_learning_rate_fraction=0.1,
        learning_rate_scaling="linear", early_stopping_patience=0, train_images=8,
        holdout_images=4, seed=1,
        checkpoints=CheckpointStore(f"file://{tmp_path}/checkpoints", S3Config()),
        resume=False)
    losses = iter(HELD_OUT_LOSSES)
    steps: list[tuple[float, np.ndarray]] = []  # each step's rate and head bias as it starts
    train_step = loop._train_step

    def recording_step(strategy, model, global_batch):
        step = train_step(strategy, model, global_batch)

        def recorded(batches):
            steps.append((float(model.optimizer.learning_rate),
                          model.layers[-1].get_weights()[1].copy()))
            return step(batches)
        return recorded

    monkeypatch.setattr(loop, "build_classifier", tiny_classifier)
    monkeypatch.setattr(loop, "tf_batches", synthetic_batches)
    monkeypatch.setattr(loop, "_train_step", recording_step)
    monkeypatch.setattr(loop, "_evaluate", lambda *_: (next(losses), 0.5))
    trained = loop.train_model(plan, None, None)

    # 2 steps an epoch; the head: 2 warming up to 0.01, 2 along the cosine; fine-tuning: its 2
    # steps warm up to 0.001
    assert [rate for rate, _ in steps] == pytest.approx([0.005, 0.01, 0.01, 0.0055,
                                                         0.0005, 0.001], rel=1e-6)
    head_after_epoch_1, fine_tune_start = steps[2][1], steps[4][1]
    np.testing.assert_array_equal(fine_tune_start, head_after_epoch_1)
    assert not np.array_equal(steps[3][1], head_after_epoch_1)  # epoch 2 trained the head on
    assert trained.state.best_epoch == 3 and trained.state.epochs_done == 3
