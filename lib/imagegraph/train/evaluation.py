"""The evaluation written with a model: per-class precision, recall and support, the confusion
matrix and the training curves, as `evaluation.json` and PNG plots.

`evaluate` is pure (labels and predictions in, figures out); `write_evaluation` writes the
JSON and draws the plots with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

EVALUATION_FILE = "evaluation.json"
CONFUSION_PLOT = "confusion_matrix.png"
CURVES_PLOT = "training_curves.png"
EVALUATION_FILES = (EVALUATION_FILE, CONFUSION_PLOT, CURVES_PLOT)


@dataclass(frozen=True)
class ClassFigures:
    """One class's precision and recall (0..1; 0 when undefined) over `support` images."""

    name: str
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    """Held-out figures: accuracy (0..1), `images`, per-class figures, and the confusion
    matrix (`confusion[true][predicted]` image counts, rows and columns in class order)."""

    accuracy: float
    images: int
    classes: tuple[ClassFigures, ...]
    confusion: tuple[tuple[int, ...], ...]


def evaluate(labels, predicted, class_names) -> Evaluation:
    """Figures for true `labels` and `predicted` class indices (equal-length int sequences)
    over `class_names` (index order)."""
    count = len(class_names)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
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
    return Evaluation(accuracy, images, tuple(figures),
                      tuple(tuple(int(v) for v in row) for row in confusion))


def write_evaluation(directory: str, evaluation: Evaluation, history: dict,
                     title: str) -> None:
    """`evaluation.json` (the figures and the per-epoch `history`) and the two plots into the
    local `directory`; `title` (the model's tag) heads the plots."""
    document = {**asdict(evaluation), "history": history}
    with open(os.path.join(directory, EVALUATION_FILE), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    _plot_confusion(os.path.join(directory, CONFUSION_PLOT), evaluation, title)
    _plot_curves(os.path.join(directory, CURVES_PLOT), history, title)


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
