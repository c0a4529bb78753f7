"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): a model's
class probabilities p made softer (T > 1) or sharper (T < 1) by one scalar T,
softmax(log p / T). That is the same as dividing the network's logits by T, since a softmax's
log-probabilities are its logits less one constant per image; it never changes which class
scores highest, so accuracy stays as it is.

Training fits T on the validation split (`fit_temperature`) and reports the test split's
calibration before and after it (`imagegraph.train.evaluation`); inference does not apply it.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

LOWEST, HIGHEST = 0.05, 20.0
"""The temperatures `fit_temperature` searches between."""
_SMALLEST_SCORE = 1e-30
"""Scores are clipped to at least this before their log (a float32 softmax gives exact 0s)."""
_TOLERANCE = 1e-7
"""The golden-section search stops when its bracket of log T is narrower than this."""


def _log_scaled(scores: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """log softmax(log p / `temperature`) of (n, classes) probabilities `scores`, float64."""
    logits = np.log(np.clip(np.asarray(scores, np.float64), _SMALLEST_SCORE, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log: npt.NDArray[np.float64] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log


def scale_scores(scores: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """(n, classes) probabilities `scores` after temperature scaling by `temperature` > 0
    (float64, rows summing to 1; 1.0 gives the scores back, up to the clipping of zeros)."""
    return np.exp(_log_scaled(scores, temperature))


def negative_log_likelihood(labels: npt.ArrayLike, scores: npt.ArrayLike,
                            temperature: float) -> float:
    """The mean negative log-likelihood (nats) of true `labels` (n class indices) under
    `scores` ((n, classes) probabilities) scaled by `temperature`."""
    labels = np.asarray(labels, np.int64)
    log = _log_scaled(scores, temperature)
    return float(-log[np.arange(len(labels)), labels].mean())


def fit_temperature(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """The temperature in [`LOWEST`, `HIGHEST`] minimising the negative log-likelihood of true
    `labels` (n class indices) under `scores` ((n, classes) probabilities), to 4 decimals; 1.0
    for no images. A golden-section search over log T: the negative log-likelihood is convex
    in 1/T (a log-sum-exp of linear functions less a linear one), so it has one minimum along
    log T too, and the search finds the global one (or a bound: `LOWEST` when every image is
    classified right, as sharper scores are then ever likelier)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return 1.0
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(labels, scores, float(np.exp(log_temperature)))

    low, high = float(np.log(LOWEST)), float(np.log(HIGHEST))
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    while high - low > _TOLERANCE:
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return round(float(np.exp((low + high) / 2.0)), 4)
