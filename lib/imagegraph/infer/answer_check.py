"""The int8 answer check: how int8's answers on the check images differ from float32's, and
whether they may be used.

Three measures, each with its bound:

- top-1 agreement, a binomial test: with n check images, int8 passes when at most
  `AgreementTest.max_disagreeing` of them get another top-1 class, the largest count at which a
  model whose true agreement is `required` (or less) passes with probability at most
  1 - `CONFIDENCE`. A model that disagrees on a tenth as often (`good_agreement`) then passes
  with probability `pass_at_good`, `CONFIDENCE` or more once n >= `images_needed(required)`.
- top-k scores: the largest absolute difference of a class's score, over the classes in either
  precision's top k of each image (the classes the predictions and classified_as edges record).
- embeddings: the smallest cosine similarity of an image's two penultimate-layer vectors (what
  the link job's similar_to edges compare), when the run writes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from imagegraph.config import InferenceConfig

CONFIDENCE = 0.95
"""A model at or below the required top-1 agreement fails the check with at least this
probability; one at the good agreement passes with at least this probability, given
`images_needed` check images."""


def binomial_pmf(k: int, n: int, p: float) -> float:
    """P(X = k) for X ~ Binomial(n, p), from `math.lgamma` (no overflow for large n)."""
    if p in (0.0, 1.0):
        return float(k == (0 if p == 0.0 else n))
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): the exact terms summed (no normal approximation)."""
    if k >= n:
        return 1.0
    return min(1.0, sum((binomial_pmf(i, n, p) for i in range(k + 1)), 0.0))


def good_agreement(required: float) -> float:
    """The agreement the check is built to pass: a tenth of the disagreement `required` allows
    (0.99 -> 0.999)."""
    return 1 - (1 - required) / 10


@dataclass(frozen=True)
class AgreementTest:
    """The top-1 test on `images` check images: pass with at most `max_disagreeing` images whose
    top-1 class differs (-1: no count passes); a model agreeing on the fraction `required`
    passes with probability `pass_at_required` (<= 1 - CONFIDENCE), one agreeing on
    `good_agreement(required)` with `pass_at_good`."""

    images: int
    required: float
    max_disagreeing: int
    pass_at_required: float
    pass_at_good: float

    @property
    def min_agreeing(self) -> int:
        """The fewest agreeing images that pass (images + 1: none)."""
        return self.images - self.max_disagreeing

    def describe(self) -> str:
        """`pass at 698 of 700 (a model at 99.00% passes with p 0.0012, at 99.90% with 0.9655)`."""
        good = good_agreement(self.required)
        if self.max_disagreeing < 0:
            return (f"no count of {self.images} passes (a model at {self.required:.2%} would "
                    f"pass with p > {1 - CONFIDENCE:.2f} even at {self.images} agreeing)")
        return (f"pass at {self.min_agreeing} of {self.images} (a model at "
                f"{self.required:.2%} passes with p {self.pass_at_required:.4f}, at "
                f"{good:.2%} with {self.pass_at_good:.4f})")


def agreement_test(images: int, required: float) -> AgreementTest:
    """The test on `images` check images for true top-1 agreement above `required`: the
    largest number of disagreements that a model at `required` reaches with probability at most
    1 - CONFIDENCE."""
    disagreement = 1 - required
    max_disagreeing, pass_at_required = -1, 0.0
    while max_disagreeing < images:
        at_most_next = pass_at_required + binomial_pmf(max_disagreeing + 1, images, disagreement)
        if at_most_next > 1 - CONFIDENCE:
            break
        max_disagreeing, pass_at_required = max_disagreeing + 1, at_most_next
    return AgreementTest(images, required, max_disagreeing, pass_at_required,
                         binomial_cdf(max_disagreeing, images, 1 - good_agreement(required)))


def images_needed(required: float, limit: int = 100_000) -> int | None:
    """The fewest check images whose test passes a model at `good_agreement(required)` with
    probability at least CONFIDENCE (628 for 0.99); None when no count up to `limit` does."""
    return next((n for n in range(1, limit + 1)
                 if agreement_test(n, required).pass_at_good >= CONFIDENCE), None)


@dataclass(frozen=True)
class AnswerCheck:
    """int8 against float32 on `images` check images: the fraction whose top-1 class agrees,
    each precision's top-1 accuracy (None when the images' labels are unknown), the largest
    top-k score difference and the smallest embedding cosine similarity (None without
    embeddings)."""

    images: int
    agreement: float
    int8_accuracy: float | None = None
    float32_accuracy: float | None = None
    max_score_delta: float = 0.0
    min_embedding_cosine: float | None = None

    @property
    def agreeing(self) -> int:
        return round(self.agreement * self.images)


def compare_answers(float32_probabilities: NDArray[Any], int8_probabilities: NDArray[Any],
                    labels: NDArray[Any] | None, top_k: int,
                    float32_embeddings: NDArray[Any] | None = None,
                    int8_embeddings: NDArray[Any] | None = None) -> AnswerCheck:
    """The answer check of two (images, classes) probability arrays of the same images, with
    the images' class indices when known, and their (images, features) embeddings when the run
    writes them."""
    float32_top = np.argmax(float32_probabilities, axis=1)
    int8_top = np.argmax(int8_probabilities, axis=1)
    in_top_k = _top_k_mask(float32_probabilities, top_k) | _top_k_mask(int8_probabilities,
                                                                       top_k)
    delta = float(np.max(np.abs(float32_probabilities - int8_probabilities), where=in_top_k,
                         initial=0.0))
    cosine = None if float32_embeddings is None or int8_embeddings is None else \
        float(np.min(cosine_similarities(float32_embeddings, int8_embeddings), initial=1.0))
    return AnswerCheck(
        len(float32_top), float(np.mean(float32_top == int8_top)),
        None if labels is None else float(np.mean(int8_top == labels)),
        None if labels is None else float(np.mean(float32_top == labels)), delta, cosine)


def _top_k_mask(probabilities: NDArray[Any], top_k: int) -> NDArray[Any]:
    """True at each image's `top_k` best classes."""
    mask = np.zeros(probabilities.shape, bool)
    np.put_along_axis(mask, np.argsort(-probabilities, axis=1)[:, :top_k], True, axis=1)
    return mask


def cosine_similarities(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """Row by row cosine similarity of two (n, features) arrays; two zero rows are the same
    direction (1), a zero row against another is 0."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~np.any(a, axis=1) & ~np.any(b, axis=1)
    return np.where(both_zero, 1.0, np.sum(a * b, axis=1) / np.where(norms == 0, 1.0, norms))


@dataclass(frozen=True)
class CheckBounds:
    """What the check requires: top-1 agreement above `min_agreement` (at `CONFIDENCE`), no
    top-k score more than `max_score_delta` from float32's, no embedding's cosine similarity
    to float32's under `min_embedding_cosine`."""

    min_agreement: float
    max_score_delta: float
    min_embedding_cosine: float

    @classmethod
    def from_config(cls, inference: InferenceConfig) -> "CheckBounds":
        return cls(inference.int8_min_agreement, inference.int8_max_score_delta,
                   inference.int8_min_embedding_cosine)


def measured(check: AnswerCheck, test: AgreementTest) -> str:
    """What the check measured, in words: `top-1 agreement 699 of 700 (99.86%; pass at 698
    of 700 ...), top-k scores within 0.0322, embedding cosine >= 0.99998`."""
    cosine = "" if check.min_embedding_cosine is None else \
        f", embedding cosine >= {check.min_embedding_cosine:.5f}"
    return (f"top-1 agreement {check.agreeing} of {check.images} ({check.agreement:.2%}; "
            f"{test.describe()}), top-k scores within {check.max_score_delta:.4f}{cosine}")


def failed_measures(check: AnswerCheck, bounds: CheckBounds, source: str) -> str:
    """The measures of `check` outside `bounds`, in one line naming each and by how much (''
    when all hold); `source` names the check images (artifact, input)."""
    test = agreement_test(check.images, bounds.min_agreement)
    failed = []
    if test.max_disagreeing < 0:
        needed = images_needed(test.required)
        failed.append(f"top-1: {check.images} {source} images are too few to show agreement "
                      f"above inference.int8_min_agreement {test.required:.2%} at "
                      f"{CONFIDENCE:.0%} confidence (" + (
                          f"{needed} let a model at {good_agreement(test.required):.2%} pass"
                          if needed else "no number of images can") + ")")
    elif check.images - check.agreeing > test.max_disagreeing:
        failed.append(f"top-1: int8 agreed with float32 on {check.agreeing} of {check.images} "
                      f"{source} images ({check.agreement:.2%}), "
                      f"{test.min_agreeing - check.agreeing} under the {test.min_agreeing} that "
                      f"show agreement above inference.int8_min_agreement {test.required:.2%} "
                      f"at {CONFIDENCE:.0%} confidence")
    if check.max_score_delta > bounds.max_score_delta:
        failed.append(f"top-k scores: differ by up to {check.max_score_delta:.4f}, "
                      f"{check.max_score_delta - bounds.max_score_delta:.4f} over "
                      f"inference.int8_max_score_delta {bounds.max_score_delta:g}")
    if check.min_embedding_cosine is not None and \
            check.min_embedding_cosine < bounds.min_embedding_cosine:
        failed.append(f"embeddings: cosine similarity down to {check.min_embedding_cosine:.5f}, "
                      f"{bounds.min_embedding_cosine - check.min_embedding_cosine:.5f} under "
                      f"inference.int8_min_embedding_cosine {bounds.min_embedding_cosine:g}")
    return "; ".join(failed)
