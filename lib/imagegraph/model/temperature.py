"""Temperature scaling of a model's class probabilities (Guo et al. 2017, "On Calibration of
Modern Neural Networks"): p made softer (T > 1) or sharper (T < 1) by one scalar T,
softmax(log p / T). That is the same as dividing the network's logits by T, since a softmax's
log-probabilities are its logits less one constant per image; it never changes which class
scores highest.

Training fits T on the validation split (`imagegraph.train.temperature`) and records it in
`metadata.json`'s metrics (`TEMPERATURE_METRIC`); inference divides by it
(`imagegraph.infer.classify`), so the scores it writes are the calibrated ones.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

TEMPERATURE_METRIC = "temperature"
"""The key of the fitted temperature in `ModelMetadata.metrics` (absent: none was fitted)."""
_SMALLEST_SCORE = 1e-30
"""Scores are clipped to at least this before their log (a float32 softmax gives exact 0s)."""


def log_scaled(scores: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """log softmax(log p / `temperature`) of (n, classes) probabilities `scores`, float64."""
    logits = np.log(np.clip(np.asarray(scores, np.float64), _SMALLEST_SCORE, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log: npt.NDArray[np.float64] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log


def scale_scores(scores: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """(n, classes) probabilities `scores` after temperature scaling by `temperature` > 0
    (float64, rows summing to 1; 1.0 gives the scores back, up to the clipping of zeros)."""
    return np.exp(log_scaled(scores, temperature))
