"""The int8 answer check's measures and bounds: the exact binomial top-1 test (against values
scipy.stats.binom gives), top-k score differences, embedding cosines, and the one line that
names what failed."""
import re
from pathlib import Path

import numpy as np
import pytest

from imagegraph.config import InferenceConfig
from imagegraph.infer.answer_check import (
    AgreementTest,
    AnswerCheck,
    CheckBounds,
    agreement_test,
    binomial_cdf,
    binomial_pmf,
    compare_answers,
    cosine_similarities,
    failed_measures,
    good_agreement,
    images_needed,
    measured,
)

BOUNDS = CheckBounds(min_agreement=0.99, max_score_delta=0.1, min_embedding_cosine=0.999)


@pytest.mark.parametrize(("k", "n", "p", "expected"), [
    # scipy.stats.binom.cdf(k, n, p), scipy 1.17.1
    (2, 200, 0.02, 0.23514813577270552),   # the old check: 198 of 200 passed a 98% model this often
    (2, 200, 0.01, 0.6766786945356558),    # and a 99% model this often
    (2, 628, 0.01, 0.049790154540287915),
    (3, 628, 0.01, 0.12664068877014673),
    (2, 628, 0.001, 0.9741006355362566),
    (2, 700, 0.01, 0.029078831280571163),
    (2, 700, 0.001, 0.9659375498861591),
    (0, 298, 0.01, 0.05003662286632573),
    (0, 299, 0.01, 0.049536256637662465),
    (4000, 10000, 0.4, 0.5043429963115055),  # a binomial coefficient far beyond a float
])
def test_binomial_cdf_matches_known_values(k, n, p, expected):
    assert binomial_cdf(k, n, p) == pytest.approx(expected, rel=1e-9)


def test_binomial_edges():
    assert binomial_pmf(5000, 10000, 0.5) == pytest.approx(0.007978646139382158, rel=1e-9)
    assert binomial_cdf(1, 3, 0.5) == pytest.approx(0.5, rel=1e-12)  # (1 + 3) / 8
    assert binomial_cdf(-1, 10, 0.3) == 0.0 and binomial_cdf(10, 10, 0.3) == 1.0
    assert binomial_cdf(0, 10, 0.0) == 1.0 and binomial_cdf(9, 10, 1.0) == 0.0


def test_the_default_check_rejects_99_percent_and_passes_99_9_percent():
    # inference.int8_check_images 700 at int8_min_agreement 0.99: pass at 698 agreeing
    test = agreement_test(InferenceConfig().int8_check_images, InferenceConfig().int8_min_agreement)
    assert test == AgreementTest(700, 0.99, 2, pytest.approx(0.029078831280571163, rel=1e-9),
                                 pytest.approx(0.9659375498861591, rel=1e-9))
    assert test.min_agreeing == 698
    assert good_agreement(0.99) == pytest.approx(0.999)
    # a 98% model: the old check (200 images, 198 agreeing) passed it 23.5% of the time
    assert binomial_cdf(test.max_disagreeing, 700, 0.02) < 1e-4
    assert test.describe() == ("pass at 698 of 700 (a model at 99.00% passes with p 0.0291, "
                               "at 99.90% with 0.9659)")


def test_the_threshold_is_the_largest_count_a_model_at_the_bound_reaches_rarely():
    test = agreement_test(628, 0.99)
    assert test.max_disagreeing == 2  # P(<= 2) = 0.0498 <= 0.05 < P(<= 3) = 0.1266
    assert agreement_test(299, 0.99).max_disagreeing == 0   # 0.99^299 = 0.0495
    assert agreement_test(298, 0.99).max_disagreeing == -1  # 0.99^298 = 0.0500: none passes
    assert agreement_test(298, 0.99).min_agreeing == 299
    assert images_needed(0.99) == 628  # 627: pass at 1 disagreement, 0.9742 -> 0.87 at 99.9%
    assert agreement_test(627, 0.99).pass_at_good < 0.95 <= agreement_test(628, 0.99).pass_at_good
    assert images_needed(1.0) is None  # agreement above 100% cannot be shown
    assert agreement_test(10_000, 1.0).max_disagreeing == -1
    for images in (40, 299, 628, 700, 1000):  # at most 5% for every size
        assert agreement_test(images, 0.99).pass_at_required <= 0.05


def test_compare_answers_counts_top1_agreement_and_both_accuracies():
    float32 = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    int8 = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4], [0.4, 0.6]])
    assert compare_answers(float32, int8, None, 1) == AnswerCheck(
        4, 0.75, max_score_delta=pytest.approx(0.4))
    assert compare_answers(float32, int8, np.array([0, 1, 1, 1]), 1) == AnswerCheck(
        4, 0.75, int8_accuracy=0.5, float32_accuracy=0.75, max_score_delta=pytest.approx(0.4))


def test_score_delta_covers_either_precisions_top_k_only():
    float32 = np.array([[0.70, 0.20, 0.06, 0.04]])
    int8 = np.array([[0.68, 0.22, 0.02, 0.08]])
    # top 1: class 0 in both, 0.02 apart; top 2 adds class 1 (0.02)
    assert compare_answers(float32, int8, None, 2).max_score_delta == pytest.approx(0.02)
    # top 3: float32's class 2 (0.04 apart) and int8's class 3 (0.04 apart)
    assert compare_answers(float32, int8, None, 3).max_score_delta == pytest.approx(0.04)
    swapped = np.array([[0.70, 0.20, 0.00, 0.10]])  # int8's third class is float32's fourth
    assert compare_answers(float32, swapped, None, 3).max_score_delta == pytest.approx(0.06)


def test_embedding_cosine_is_the_smallest_of_the_images():
    float32 = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    int8 = np.array([[1.0, 1.0], [0.0, 1.0], [3.0, 4.0], [0.0, 0.0]])
    assert cosine_similarities(float32, int8).tolist() == pytest.approx(
        [2 ** -0.5, 1.0, 1.0, 1.0])
    assert cosine_similarities(float32[3:], int8[:1]).tolist() == [0.0]
    probabilities = np.full((4, 2), 0.5)
    assert compare_answers(probabilities, probabilities, None, 1, float32,
                           int8).min_embedding_cosine == pytest.approx(2 ** -0.5)
    assert compare_answers(probabilities, probabilities, None, 1).min_embedding_cosine is None


def test_a_check_within_its_bounds_fails_nothing():
    check = AnswerCheck(700, 699 / 700, max_score_delta=0.1, min_embedding_cosine=0.999)
    assert failed_measures(check, BOUNDS, "artifact") == ""
    assert measured(check, agreement_test(700, 0.99)) == (
        "top-1 agreement 699 of 700 (99.86%; pass at 698 of 700 (a model at 99.00% passes "
        "with p 0.0291, at 99.90% with 0.9659)), top-k scores within 0.1000, embedding cosine "
        ">= 0.99900")


@pytest.mark.parametrize(("check", "line"), [
    (AnswerCheck(700, 697 / 700, max_score_delta=0.01),
     "top-1: int8 agreed with float32 on 697 of 700 artifact images (99.57%), 1 under the 698 "
     "that show agreement above inference.int8_min_agreement 99.00% at 95% confidence"),
    (AnswerCheck(700, 1.0, max_score_delta=0.1234),
     "top-k scores: differ by up to 0.1234, 0.0234 over inference.int8_max_score_delta 0.1"),
    (AnswerCheck(700, 1.0, max_score_delta=0.01, min_embedding_cosine=0.99),
     "embeddings: cosine similarity down to 0.99000, 0.00900 under "
     "inference.int8_min_embedding_cosine 0.999"),
    (AnswerCheck(200, 1.0, max_score_delta=0.01),
     "top-1: 200 artifact images are too few to show agreement above "
     "inference.int8_min_agreement 99.00% at 95% confidence (628 let a model at 99.90% pass)"),
    (AnswerCheck(700, 690 / 700, max_score_delta=0.2, min_embedding_cosine=0.9),
     "top-1: int8 agreed with float32 on 690 of 700 artifact images (98.57%), 8 under the 698 "
     "that show agreement above inference.int8_min_agreement 99.00% at 95% confidence; "
     "top-k scores: differ by up to 0.2000, 0.1000 over inference.int8_max_score_delta 0.1; "
     "embeddings: cosine similarity down to 0.90000, 0.09900 under "
     "inference.int8_min_embedding_cosine 0.999"),
])
def test_a_failed_check_names_each_measure_and_by_how_much(check, line):
    assert failed_measures(check, BOUNDS, "artifact") == line


def test_bounds_come_from_the_inference_settings():
    assert CheckBounds.from_config(InferenceConfig()) == CheckBounds(0.99, 0.1, 0.999)


def test_the_power_table_in_the_docs_is_what_the_test_computes():
    page = (Path(__file__).resolve().parents[2] / "docs" / "INFERENCE.md").read_text()
    rows = re.findall(r"^ *\| (\d+)[^|]*\| ([^|]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| "
                      r"([\d.]+) \|$", page, re.MULTILINE)
    assert [int(row[0]) for row in rows] == [200, 299, 628, 700, 1000]
    for images, passes_at, *chances in rows:
        test = agreement_test(int(images), 0.99)
        assert passes_at == (str(test.min_agreeing) if test.max_disagreeing >= 0 else
                             "none (298 or fewer cannot show 99%)")
        assert chances == [f"{binomial_cdf(test.max_disagreeing, int(images), 1 - rate):.4f}"
                           for rate in (0.98, 0.99, 0.995, 0.999)]
