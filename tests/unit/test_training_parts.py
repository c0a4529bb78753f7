"""The pure parts of training: the evaluation's figures (accuracy, top-k, calibration error,
temperature scaling), class weights, the phase schedule and early stopping, resuming
mid-schedule, the uint8 feed's cast and the augmentation."""
import dataclasses
import json

import numpy as np
import pytest

from imagegraph.config import S3Config
from imagegraph.model.temperature import scale_scores
from imagegraph.train.checkpoints import CheckpointStore, TrainingState
from imagegraph.train.data import Augmentation, FeedSpec, augment, balanced_class_weights, to_pixels
from imagegraph.train.evaluation import (
    ReliabilityBin,
    evaluate,
    expected_calibration_error,
    reliability_bins,
    top_k_accuracy,
    write_evaluation,
)
from imagegraph.train.loop import (
    FINE_TUNE,
    HEAD,
    WHOLE,
    RateSchedule,
    TrainingPlan,
    early_stop_update,
    next_phases,
)
from imagegraph.train.temperature import (
    HIGHEST,
    LOWEST,
    fit_temperature,
    negative_log_likelihood,
)


def one_hot(predicted, classes: int) -> np.ndarray:
    """Scores sure of the `predicted` classes: 0.9 on each, the rest shared by the others."""
    scores = np.full((len(predicted), classes), 0.1 / (classes - 1))
    scores[np.arange(len(predicted)), predicted] = 0.9
    return scores


def test_evaluation_counts_per_class_and_the_confusion_matrix():
    # true: a a a b b c; predicted: a b a b b a
    result = evaluate([0, 0, 0, 1, 1, 2], one_hot([0, 1, 0, 1, 1, 0], 3), ["a", "b", "c"])
    assert result.confusion == ((2, 1, 0), (0, 2, 0), (1, 0, 0))
    assert result.accuracy == round(4 / 6, 4) and result.images == 6
    a, b, c = result.classes
    assert (a.precision, a.recall, a.support) == (round(2 / 3, 4), round(2 / 3, 4), 3)
    assert (b.precision, b.recall, b.support) == (round(2 / 3, 4), 1.0, 2)
    assert (c.precision, c.recall, c.support) == (0.0, 0.0, 1)  # never predicted: 0, not NaN


def test_top_k_accuracy_counts_the_true_class_among_the_k_highest_scores():
    scores = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]]
    # true class ranks 1st, 3rd, 2nd; a tie ranks the lower index first
    assert top_k_accuracy([0, 0, 1, 1], scores, 1) == 0.25
    assert top_k_accuracy([0, 0, 1, 1], scores, 2) == 0.75
    assert top_k_accuracy([0, 0, 1, 1], scores, 3) == 1.0
    assert top_k_accuracy([], np.zeros((0, 3)), 2) == 0.0


def test_evaluation_top_k_is_five_of_six_classes_and_all_of_fewer():
    # image 0: true class 5 has the lowest of six scores, outside the top 5
    scores = [[0.3, 0.25, 0.2, 0.15, 0.07, 0.03], [0.03, 0.07, 0.15, 0.2, 0.25, 0.3]]
    six = evaluate([5, 0], scores, list("abcdef"))
    assert (six.accuracy, six.top_k, six.top_k_accuracy) == (0.0, 5, 0.0)
    three = evaluate([2, 1], [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], list("abc"))
    assert (three.accuracy, three.top_k, three.top_k_accuracy) == (0.0, 3, 1.0)


# confidence 0.95 twice, both right; 0.7 four times, two right; 0.55 twice, both right
CALIBRATION_LABELS = [0, 1, 0, 0, 1, 1, 0, 1]
CALIBRATION_SCORES = [[0.95, 0.05], [0.05, 0.95], [0.7, 0.3], [0.3, 0.7], [0.7, 0.3],
                      [0.3, 0.7], [0.55, 0.45], [0.45, 0.55]]


def test_expected_calibration_error_by_hand():
    # (2 * |1 - 0.95| + 4 * |0.5 - 0.7| + 2 * |1 - 0.55|) / 8 = 1.8 / 8
    assert expected_calibration_error(CALIBRATION_LABELS, CALIBRATION_SCORES) == 0.225
    assert expected_calibration_error([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0
    assert expected_calibration_error([], np.zeros((0, 2))) == 0.0


def test_reliability_bins_by_hand():
    bins = reliability_bins(CALIBRATION_LABELS, CALIBRATION_SCORES)
    assert len(bins) == 15 and sum(b.images for b in bins) == 8
    assert bins[0] == ReliabilityBin(0.0, 0.0667, 0, 0.0, 0.0)
    assert bins[8] == ReliabilityBin(0.5333, 0.6, 2, 1.0, 0.55)
    assert bins[10] == ReliabilityBin(0.6667, 0.7333, 4, 0.5, 0.7)
    assert bins[14] == ReliabilityBin(0.9333, 1.0, 2, 1.0, 0.95)
    assert [m for m, b in enumerate(bins) if b.images] == [8, 10, 14]


def test_a_confidence_on_a_bin_edge_is_in_the_bin_below_it():
    # 0.6 = 9/15 and 1/3 = 5/15 close bins 8 and 4; 1.0 closes the last
    bins = reliability_bins([0, 0, 0], [[0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    assert [(m, b.images) for m, b in enumerate(bins) if b.images] == [(4, 1), (8, 1), (14, 1)]


def test_temperature_fitted_by_hand():
    # all at confidence 0.9, three of four right: the likeliest scaled confidence is 0.75,
    # 1 / (1 + 9^(-1/T)) = 0.75 at T = 2
    assert fit_temperature([0, 0, 0, 1], [[0.9, 0.1]] * 4) == 2.0
    np.testing.assert_allclose(scale_scores([[0.9, 0.1]], 2.0), [[0.75, 0.25]])
    assert negative_log_likelihood([0, 0, 0, 1], [[0.9, 0.1]] * 4, 2.0) == pytest.approx(
        -(3 * np.log(0.75) + np.log(0.25)) / 4)
    # underconfident, 0.6 and three of four right: (2/3)^(1/T) = 1/3 at T = ln 1.5 / ln 3
    assert fit_temperature([0, 0, 0, 1], [[0.6, 0.4]] * 4) == round(np.log(1.5) / np.log(3), 4)
    # every image right: ever sharper is ever likelier, up to the bound
    assert fit_temperature([0, 1], [[0.9, 0.1], [0.2, 0.8]]) == LOWEST
    # scores no better than chance: as flat as the bound allows
    assert fit_temperature([0, 1], [[0.9, 0.1], [0.9, 0.1]]) == HIGHEST
    assert fit_temperature([], np.zeros((0, 2))) == 1.0


def test_evaluation_reports_calibration_before_and_after_the_temperature():
    result = evaluate([0, 0, 0, 1], [[0.9, 0.1]] * 4, ["a", "b"], temperature=2.0)
    assert (result.accuracy, result.ece, result.temperature, result.scaled_ece) == \
        (0.75, 0.15, 2.0, 0.0)
    assert result.reliability[13] == ReliabilityBin(0.8667, 0.9333, 4, 0.75, 0.9)
    assert result.scaled_reliability[11] == ReliabilityBin(0.7333, 0.8, 4, 0.75, 0.75)


def test_evaluation_files(tmp_path):
    result = evaluate([0, 1], [[0.8, 0.2], [0.6, 0.4]], ["cat", "dog"], temperature=1.5)
    write_evaluation(str(tmp_path), result, {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                                             "accuracy": [0.5, 0.7],
                                             "val_accuracy": [0.4, 0.6]}, "pets@v1")
    document = json.loads((tmp_path / "evaluation.json").read_text())
    assert document["confusion"] == [[1, 0], [1, 0]]
    assert document["classes"][1] == {"name": "dog", "precision": 0.0, "recall": 0.0,
                                      "support": 1}
    assert document["history"]["val_loss"] == [1.1, 0.7]
    # (|1 - 0.8| + |0 - 0.6|) / 2
    assert (document["top_k"], document["top_k_accuracy"], document["ece"],
            document["temperature"]) == (2, 1.0, 0.4, 1.5)
    assert len(document["reliability"]) == len(document["scaled_reliability"]) == 15
    assert document["reliability"][11] == {"lower": 0.7333, "upper": 0.8, "images": 1,
                                           "accuracy": 1.0, "confidence": 0.8}
    for plot in ("confusion_matrix.png", "training_curves.png", "reliability_diagram.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_the_training_summary_gives_the_test_splits_accuracy_top_k_and_calibration():
    from imagegraph.model.artifact import ModelMetadata
    from imagegraph.train.job import TrainingResult

    evaluation = evaluate([0, 0, 0, 1], [[0.9, 0.1]] * 4, ["a", "b"], temperature=2.0)
    metadata = ModelMetadata(
        "pets", "v1", 32, 32, 3, "scale_0_1", ("a", "b"), uri="s3://b/pets/v1",
        metrics={"test_accuracy": evaluation.accuracy, "holdout_accuracy": 0.8},
        training={"base": "small_cnn", "weights": "none", "epochs_trained": 2,
                  "best_epoch": 2, "early_stopped": False, "pixel_feed": "uint8",
                  "workers": 1})
    lines = TrainingResult(metadata, 10, 5, 4, 0, evaluation, 1000.0, 50.0,
                           (20,)).summary_lines()
    assert lines[6:9] == [
        "  validation accuracy  0.8000 (chose the epoch)",
        "  test accuracy        0.7500 (4 images that chose nothing), top-2 1.0000",
        "  test calibration     ECE 0.1500 as scored, 0.0000 at temperature 2 "
        "(fitted on validation)"]
    assert lines[9] == ("  evaluation           s3://b/pets/v1/evaluation.json, "
                        "s3://b/pets/v1/confusion_matrix.png, "
                        "s3://b/pets/v1/reliability_diagram.png, "
                        "s3://b/pets/v1/training_curves.png")


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
        fine_tune_learning_rate=0.001, warmup_epochs=1.0, final_learning_rate_fraction=0.1,
        learning_rate_scaling="linear", early_stopping_patience=2, train_images=100,
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


def test_each_phase_peaks_at_its_rate_times_the_workers_after_a_warm_up_of_whole_steps():
    head, fine_tune = plan().phases()
    assert plan().schedule(head, 5, workers=2) == RateSchedule(0.02, 5, 15, 0.1)
    assert plan().schedule(fine_tune, 5, workers=2) == RateSchedule(0.002, 5, 10, 0.1)
    assert plan(learning_rate_scaling="none").schedule(head, 5, 2) == \
        RateSchedule(0.01, 5, 15, 0.1)
    assert plan(warmup_epochs=0.4).schedule(head, 5, 1).warmup_steps == 2
    assert plan(warmup_epochs=0).schedule(head, 5, 1).warmup_steps == 0
    assert plan(warmup_epochs=10).schedule(head, 5, 1).warmup_steps == 15  # the whole phase


@pytest.mark.parametrize("step, rate", [
    (0, 0.004), (1, 0.008), (4, 0.02),  # warming up: (step + 1) / 5 of the peak
    (5, 0.02), (10, 0.011),  # the cosine from the peak: halfway, 0.1 + 0.9 / 2 of it
    (14, 0.02 * (0.1 + 0.9 * 0.5 * (1 + np.cos(0.9 * np.pi)))),  # the phase's last step
    (15, 0.002), (40, 0.002),  # the floor, after the phase (a resumed count never goes there)
])
def test_the_learning_rate_warms_up_linearly_then_decays_along_a_cosine(step, rate):
    assert RateSchedule(0.02, 5, 15, 0.1).rate(step) == pytest.approx(rate, rel=1e-12)


def test_without_warm_up_or_decay_the_rate_is_constant():
    constant = RateSchedule(0.02, 0, 15, 1.0)
    assert [constant.rate(step) for step in (0, 7, 14)] == [0.02, 0.02, 0.02]


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
