"""The pure parts of training: the evaluation's figures, class weights, the phase schedule
and early stopping, resuming mid-schedule, the uint8 feed's cast and the augmentation."""
import dataclasses
import json

import numpy as np
import pytest

from imagegraph.config import S3Config
from imagegraph.train.checkpoints import CheckpointStore, TrainingState
from imagegraph.train.data import Augmentation, FeedSpec, augment, balanced_class_weights, to_pixels
from imagegraph.train.evaluation import evaluate, write_evaluation
from imagegraph.train.loop import (
    FINE_TUNE,
    HEAD,
    WHOLE,
    TrainingPlan,
    early_stop_update,
    next_phases,
)


def test_evaluation_counts_per_class_and_the_confusion_matrix():
    # true: a a a b b c; predicted: a b a b b a
    result = evaluate([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 1, 0], ["a", "b", "c"])
    assert result.confusion == ((2, 1, 0), (0, 2, 0), (1, 0, 0))
    assert result.accuracy == round(4 / 6, 4) and result.images == 6
    a, b, c = result.classes
    assert (a.precision, a.recall, a.support) == (round(2 / 3, 4), round(2 / 3, 4), 3)
    assert (b.precision, b.recall, b.support) == (round(2 / 3, 4), 1.0, 2)
    assert (c.precision, c.recall, c.support) == (0.0, 0.0, 1)  # never predicted: 0, not NaN


def test_evaluation_files(tmp_path):
    result = evaluate([0, 1], [0, 0], ["cat", "dog"])
    write_evaluation(str(tmp_path), result, {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                                             "accuracy": [0.5, 0.7],
                                             "val_accuracy": [0.4, 0.6]}, "pets@v1")
    document = json.loads((tmp_path / "evaluation.json").read_text())
    assert document["confusion"] == [[1, 0], [1, 0]]
    assert document["classes"][1] == {"name": "dog", "precision": 0.0, "recall": 0.0,
                                      "support": 1}
    assert document["history"]["val_loss"] == [1.1, 0.7]
    for plot in ("confusion_matrix.png", "training_curves.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_balanced_class_weights_make_every_class_weigh_the_same():
    weights = balanced_class_weights([90, 10])
    assert weights == (round(100 / 180, 6), 5.0)
    assert 90 * weights[0] == pytest.approx(10 * weights[1])
    assert balanced_class_weights([5, 5, 5]) == (1.0, 1.0, 1.0)


def plan(**changes) -> TrainingPlan:
    base = TrainingPlan(
        base="mobilenet_v2", weights="/tmp/w.weights.h5", num_classes=3,
        feed=FeedSpec((32, 32, 3), "uint8", "mobilenet_v2", 8, (1.0, 1.0, 1.0)),
        epochs=3, fine_tune_epochs=2, unfreeze_layers=10, learning_rate=0.01,
        fine_tune_learning_rate=0.001, early_stopping_patience=2, train_images=100,
        holdout_images=20, seed=1, checkpoints=CheckpointStore("file:///tmp/c", S3Config()),
        resume=False)
    return dataclasses.replace(base, **changes)


def test_pretrained_weights_train_the_head_then_fine_tune():
    head, fine_tune = plan().phases()
    assert (head.name, head.first_epoch, head.end_epoch, head.learning_rate) == \
        (HEAD, 0, 3, 0.01)
    assert (fine_tune.name, fine_tune.first_epoch, fine_tune.end_epoch,
            fine_tune.learning_rate) == (FINE_TUNE, 3, 5, 0.001)
    assert [p.name for p in plan(fine_tune_epochs=0).phases()] == [HEAD]
    # no pretrained weights, or the small CNN: the whole network in one phase
    for whole in (plan(weights=None), plan(base="small_cnn")):
        assert [(p.name, p.end_epoch) for p in whole.phases()] == [(WHOLE, 3)]


@pytest.mark.parametrize("state, expected", [
    (TrainingState(phase=HEAD), [(HEAD, 0), (FINE_TUNE, 3)]),
    (TrainingState(epochs_done=2, phase=HEAD), [(HEAD, 2), (FINE_TUNE, 3)]),
    (TrainingState(epochs_done=3, phase=HEAD), [(FINE_TUNE, 3)]),
    (TrainingState(epochs_done=1, phase=HEAD, phase_stopped=True), [(FINE_TUNE, 3)]),
    (TrainingState(epochs_done=4, phase=FINE_TUNE), [(FINE_TUNE, 4)]),
    (TrainingState(epochs_done=4, phase=FINE_TUNE, phase_stopped=True), []),
    (TrainingState(epochs_done=5, phase=FINE_TUNE), []),
])
def test_a_resumed_run_goes_on_where_the_state_stands(state, expected):
    assert [(phase.name, start) for phase, start in next_phases(plan(), state)] == expected


def test_early_stopping_after_patience_epochs_without_a_lower_loss():
    state = TrainingState(phase=HEAD)
    state, improved = early_stop_update(state, 0, 1.0, patience=2)
    assert improved and state.best_epoch == 1 and not state.phase_stopped
    state, improved = early_stop_update(state, 1, 1.0, patience=2)  # equal is no better
    assert not improved and state.epochs_without_improvement == 1 and not state.phase_stopped
    state, improved = early_stop_update(state, 2, 1.2, patience=2)
    assert not improved and state.phase_stopped and state.best_epoch == 1
    never = early_stop_update(dataclasses.replace(state, phase_stopped=False), 3, 5.0, 0)[0]
    assert not never.phase_stopped


def test_uint8_pixels_are_cast_in_tensorflow():
    spec = FeedSpec((2, 2, 1), "uint8", "scale_0_1", 2, (1.0,))
    raw = [bytes([0, 128, 255, 7]), bytes([1, 2, 3, 4])]
    pixels = to_pixels(np.array(raw, dtype=object), spec).numpy()
    assert pixels.dtype == np.float32
    assert pixels.shape == (2, 2, 2, 1)
    assert pixels[0].ravel().tolist() == [0.0, 128.0, 255.0, 7.0]
    floats = FeedSpec((2, 2, 1), "float32", "scale_0_1", 2, (1.0,))
    assert to_pixels(np.array([[0.0, 128.0, 255.0, 7.0]], np.float32), floats).numpy()[0] \
        .ravel().tolist() == [0.0, 128.0, 255.0, 7.0]


def test_augmentation_off_is_the_identity_and_on_stays_in_range():
    import tensorflow as tf

    tf.random.set_seed(3)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)), tf.float32)
    np.testing.assert_array_equal(augment(images, Augmentation()).numpy(), images.numpy())
    changed = augment(images, Augmentation(flip=True, crop=0.2, brightness=0.2,
                                           contrast=0.3)).numpy()
    assert changed.shape == images.shape
    assert changed.min() >= 0.0 and changed.max() <= 255.0
    # drawn per image: the images do not all change by the same amount
    shifts = (changed - images.numpy()).mean(axis=(1, 2, 3))
    assert np.std(shifts) > 1.0


def test_flip_alone_mirrors_images_or_leaves_them():
    import tensorflow as tf

    tf.random.set_seed(5)
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (64, 4, 4, 1)), tf.float32)
    flipped = augment(images, Augmentation(flip=True)).numpy()
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images.numpy())]
    same = [np.array_equal(f, i) for f, i in zip(flipped, images.numpy())]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


def test_file_checkpoints_round_trip(tmp_path):
    store = CheckpointStore((tmp_path / "out" / "_checkpoints").as_uri(), S3Config())
    work, restored = tmp_path / "work", tmp_path / "restored"
    work.mkdir()
    restored.mkdir()
    assert store.restore(str(restored)) is None
    for name in ("last.keras", "best.keras"):
        (work / name).write_bytes(name.encode())
    state = TrainingState(epochs_done=2, phase=HEAD, best_val_loss=0.5, best_epoch=2,
                          history={"loss": [1.0, 0.8]})
    store.save(str(work), state, best_improved=True)
    assert store.restore(str(restored)) == state
    assert (restored / "best.keras").read_bytes() == b"best.keras"
    store.clear()
    assert store.restore(str(restored)) is None


def test_an_hdfs_cache_is_reached_through_the_namenodes_http_address():
    from imagegraph.train.cache_store import petastorm_url

    # EMR's hdfs-site.xml names the primary node; conf/emr.yaml's URI names no host
    assert (petastorm_url("hdfs:///tmp/imagegraph-petastorm", "ip-10-0-0-7.ec2.internal:9870")
            == "webhdfs://ip-10-0-0-7.ec2.internal:9870/tmp/imagegraph-petastorm")
    # Hadoop's default binds every interface: the URI's own host, at that port
    assert (petastorm_url("hdfs://namenode:8020/cache", "0.0.0.0:9871")
            == "webhdfs://namenode:9871/cache")
    for unchanged in ("s3://bucket/cache", "s3a://bucket/cache", "file:///tmp/cache",
                      "webhdfs://namenode:9870/cache"):
        assert petastorm_url(unchanged, "0.0.0.0:9870") == unchanged
    with pytest.raises(ValueError, match=r"names no host; name one: hdfs://NAMENODE/path"):
        petastorm_url("hdfs:///cache", "0.0.0.0:9870")
