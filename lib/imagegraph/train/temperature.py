"""Fitting the temperature of temperature scaling (`imagegraph.model.temperature`, which
says what it is): the T that makes the validation split's scores likeliest.

Training fits T on the validation split (`fit_temperature`), reports the test split's
calibration before and after it (`imagegraph.train.evaluation`) and records it in
`metadata.json`'s metrics; inference applies it.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imagegraph.model.temperature import log_scaled

LOWEST, HIGHEST = 0.05, 20.0
"""The temperatures `fit_temperature` searches between."""
_TOLERANCE = 1e-7
"""The golden-section search stops when its bracket of log T is narrower than this."""


def negative_log_likelihood(labels: npt.ArrayLike, scores: npt.ArrayLike,
                            temperature: float) -> float:
    """The mean negative log-likelihood (nats) of true `labels` (n class indices) under
    `scores` ((n, classes) probabilities) scaled by `temperature`."""
    labels = np.asarray(labels, np.int64)
    log = log_scaled(scores, temperature)
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
