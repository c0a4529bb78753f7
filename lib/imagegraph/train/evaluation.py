"""The evaluation written with a model: top-1 and top-k accuracy, per-class precision, recall
and support, the confusion matrix, how well the scores are calibrated (expected calibration
error and the reliability diagram's bins, as scored and after temperature scaling) and the
training curves, as `evaluation.json` and PNG plots.

`evaluate` is pure (labels and scores in, figures out); `write_evaluation` writes the JSON and
draws the plots with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from imagegraph.model.temperature import scale_scores

EVALUATION_FILE = "evaluation.json"
CONFUSION_PLOT = "confusion_matrix.png"
CURVES_PLOT = "training_curves.png"
RELIABILITY_PLOT = "reliability_diagram.png"
EVALUATION_FILES = (EVALUATION_FILE, CONFUSION_PLOT, CURVES_PLOT, RELIABILITY_PLOT)
TOP_K = 5
"""Top-k accuracy counts an image right when its class is among the k highest scores, k =
min(TOP_K, classes)."""
CONFIDENCE_BINS = 15
"""Equal-width confidence bins of the expected calibration error and the reliability diagram."""


@dataclass(frozen=True)
class ClassFigures:
    """One class's precision and recall (0..1; 0 when undefined) over `support` images."""

    name: str
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    """The images whose confidence (their highest score) lies in (`lower`, `upper`]: how many,
    the fraction of them whose highest score is their true class (`accuracy`, 0..1) and their
    mean confidence (0..1); both 0.0 when the bin is empty."""

    lower: float
    upper: float
    images: int
    accuracy: float
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    """Held-out figures: top-1 `accuracy` (0..1), `images`, per-class figures, the confusion
    matrix (`confusion[true][predicted]` image counts, rows and columns in class order),
    `top_k_accuracy` (0..1) for k = `top_k`, and calibration: `ece` and `reliability` (the
    `CONFIDENCE_BINS` bins) of the scores as the model gives them, `temperature` (fitted
    elsewhere, on other images; 1.0 when none was) and `scaled_ece` and `scaled_reliability`
    of the scores after temperature scaling (`imagegraph.train.temperature`)."""

    accuracy: float
    images: int
    classes: tuple[ClassFigures, ...]
    confusion: tuple[tuple[int, ...], ...]
    top_k: int
    top_k_accuracy: float
    ece: float
    reliability: tuple[ReliabilityBin, ...]
    temperature: float
    scaled_ece: float
    scaled_reliability: tuple[ReliabilityBin, ...]


def evaluate(labels, scores, class_names, temperature: float = 1.0) -> Evaluation:
    """Figures for true `labels` (n class indices) and the model's `scores` for them ((n,
    classes) class probabilities, each row summing to 1) over `class_names` (index order).
    The predicted class is the highest score (the first on a tie); `temperature` > 0 rescales
    the scores for `scaled_ece` and `scaled_reliability`."""
    count = len(class_names)
    labels = np.asarray(labels, np.int64)
    scores = np.asarray(scores, np.float64).reshape(len(labels), count)
    predicted = np.argmax(scores, axis=1)
    confusion = np.zeros((count, count), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    figures = []
    for index, name in enumerate(class_names):
        hits = int(confusion[index, index])
        predicted_as = int(confusion[:, index].sum())
        support = int(confusion[index].sum())
        figures.append(ClassFigures(name, round(hits / predicted_as, 4) if predicted_as else 0.0,
                                    round(hits / support, 4) if support else 0.0, support))
    images = int(len(labels))
    accuracy = round(float(np.trace(confusion)) / images, 4) if images else 0.0
    top_k = min(TOP_K, count)
    scaled = scale_scores(scores, temperature)
    return Evaluation(accuracy, images, tuple(figures),
                      tuple(tuple(int(v) for v in row) for row in confusion),
                      top_k, top_k_accuracy(labels, scores, top_k),
                      expected_calibration_error(labels, scores),
                      reliability_bins(labels, scores), round(float(temperature), 4),
                      expected_calibration_error(labels, scaled),
                      reliability_bins(labels, scaled))


def top_k_accuracy(labels, scores, k: int) -> float:
    """The fraction (0..1, 4 decimals) of images whose true class is among their `k` highest
    `scores` (ties ranked by class index), 0.0 for no images."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return 0.0
    ranked = np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")[:, :k]
    return round(float(np.mean(np.any(ranked == labels[:, None], axis=1))), 4)


def _confidence_bin(confidence: np.ndarray) -> np.ndarray:
    """The index of each confidence's bin (`CONFIDENCE_BINS` equal-width bins, (m-1)/M < c <=
    m/M is bin m-1; 0 is in the first)."""
    inner_edges = np.arange(1, CONFIDENCE_BINS) / CONFIDENCE_BINS
    return np.searchsorted(inner_edges, confidence, side="left")


def reliability_bins(labels, scores) -> tuple[ReliabilityBin, ...]:
    """The reliability diagram's `CONFIDENCE_BINS` bins (all of them, empty ones too) of
    images with true `labels` and `scores` ((n, classes) probabilities); figures rounded to 4
    decimals."""
    labels, scores = np.asarray(labels, np.int64), np.asarray(scores, np.float64)
    confidence = scores.max(axis=1)
    right = np.argmax(scores, axis=1) == labels
    index = _confidence_bin(confidence)
    bins = []
    for m in range(CONFIDENCE_BINS):
        member = index == m
        images = int(member.sum())
        bins.append(ReliabilityBin(
            round(m / CONFIDENCE_BINS, 4), round((m + 1) / CONFIDENCE_BINS, 4), images,
            round(float(right[member].mean()), 4) if images else 0.0,
            round(float(confidence[member].mean()), 4) if images else 0.0))
    return tuple(bins)


def expected_calibration_error(labels, scores) -> float:
    """The expected calibration error (0..1, 4 decimals) of `scores` ((n, classes)
    probabilities) for true `labels`, as Guo et al. 2017 define it: the images put in
    `CONFIDENCE_BINS` equal-width bins by their confidence c (their highest score; bin m holds
    (m-1)/M < c <= m/M), ECE = sum over bins of |bin| / n * |accuracy(bin) - mean c(bin)|,
    where accuracy is the fraction whose highest score is their true class. 0.0 for no
    images."""
    labels, scores = np.asarray(labels, np.int64), np.asarray(scores, np.float64)
    if not len(labels):
        return 0.0
    confidence = scores.max(axis=1)
    right = (np.argmax(scores, axis=1) == labels).astype(np.float64)
    index = _confidence_bin(confidence)
    gaps = np.abs(np.bincount(index, right - confidence, CONFIDENCE_BINS))
    return round(float(gaps.sum() / len(labels)), 4)


def write_evaluation(directory: str, evaluation: Evaluation, history: dict,
                     title: str) -> None:
    """`evaluation.json` (the figures and the per-epoch `history`) and the three plots into
    the local `directory`; `title` (the model's tag) heads the plots."""
    document = {**asdict(evaluation), "history": history}
    with open(os.path.join(directory, EVALUATION_FILE), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    _plot_confusion(os.path.join(directory, CONFUSION_PLOT), evaluation, title)
    _plot_curves(os.path.join(directory, CURVES_PLOT), history, title)
    _plot_reliability(os.path.join(directory, RELIABILITY_PLOT), evaluation, title)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(path: str, evaluation: Evaluation, title: str) -> None:
    plt = _pyplot()
    names = [figures.name for figures in evaluation.classes]
    matrix = np.asarray(evaluation.confusion)
    size = max(4.0, 0.5 * len(names) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{title}: held-out accuracy {evaluation.accuracy:.3f} "
                   f"({evaluation.images} images)", fontsize=9)
    if len(names) <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            axes.text(column, row, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_curves(path: str, history: dict, title: str) -> None:
    plt = _pyplot()
    epochs = history.get("epoch") or range(1, len(history.get("loss", [])) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("loss", "training"), ("val_loss", "held out")):
        loss_axes.plot(epochs, history.get(key, []), marker="o", label=label)
    for key, label in (("accuracy", "training"), ("val_accuracy", "held out")):
        accuracy_axes.plot(epochs, history.get(key, []), marker="o", label=label)
    loss_axes.set_title("loss")
    accuracy_axes.set_title("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_reliability(path: str, evaluation: Evaluation, title: str) -> None:
    """Accuracy against confidence per bin, as scored and after temperature scaling; a
    calibrated model's bars reach the diagonal. Each bar is labelled with its images."""
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for axes, bins, name, ece in (
            (panels[0], evaluation.reliability, "as scored", evaluation.ece),
            (panels[1], evaluation.scaled_reliability,
             f"temperature {evaluation.temperature:g}", evaluation.scaled_ece)):
        filled = [b for b in bins if b.images]
        axes.bar([b.lower for b in filled], [b.accuracy for b in filled],
                 width=[b.upper - b.lower for b in filled], align="edge", edgecolor="black",
                 label="accuracy")
        axes.plot([b.confidence for b in filled], [b.confidence for b in filled], "r_",
                  markersize=12, label="mean confidence")
        for b in filled:
            axes.text((b.lower + b.upper) / 2, b.accuracy + 0.01, str(b.images),
                      ha="center", va="bottom", fontsize=6)
        axes.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.08)
        axes.set_xlabel("confidence (highest score)")
        axes.set_title(f"{name}: ECE {ece:.3f}", fontsize=9)
        axes.legend(loc="upper left", fontsize=7)
    panels[0].set_ylabel("accuracy")
    figure.suptitle(f"{title}: reliability on {evaluation.images} held-out images "
                    f"({len(evaluation.reliability)} bins)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
