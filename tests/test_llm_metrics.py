"""TOFU metric functions (llm/evaluate/metrics.py) on small hand-computed cases."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import hmean, ks_2samp

from llm.evaluate import metrics

LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)


def test_probability_is_mean_of_length_normalised_probabilities():
    # avg losses 0 and ln 2 -> P = 1 and 1/2
    assert metrics.probability([0.0, LN2]) == pytest.approx(0.75)


def test_normalised_probability_against_perturbed_options():
    # P(c) = 1/2, P(w) = 1/4 + 1/4  ->  1/2 / (1/2 + 1/2) = 1/2 ; second item: 1 / (1 + 1/8) = 8/9
    got = metrics.normalised_probability([LN2, 0.0], [[LN4, LN4], [LN8]])
    np.testing.assert_allclose(got, [0.5, 8 / 9], rtol=1e-12)


def test_normalised_probability_survives_collapsed_losses():
    got = metrics.normalised_probability([2000.0], [[1000.0, 3000.0]])  # exp(-2000) underflows
    assert got[0] == pytest.approx(0.0, abs=1e-300) and np.isfinite(got).all()
    assert metrics.normalised_probability([1000.0], [[3000.0]])[0] == pytest.approx(1.0)


def test_truth_ratio_uses_the_geometric_mean_of_wrong_answers():
    # P(c) = 1/2, wrong P = 1/2 and 1/8: geometric mean 1/4 -> R = 1/2 (arithmetic would give 0.625)
    r = metrics.truth_ratio([LN2], [[LN2, LN8]])
    assert r[0] == pytest.approx(0.5)
    assert metrics.log_truth_ratio([1.0], [[2.0, 4.0]])[0] == pytest.approx(-2.0)


def test_truth_ratio_aggregates():
    log_r = np.log([2.0, 0.5, 1.0])
    assert metrics.truth_ratio_forget(log_r) == pytest.approx((0.5 + 0.5 + 1.0) / 3)   # min(R, 1/R)
    log_r = np.log([0.25, 2.0, 1.0])
    assert metrics.truth_ratio_retain(log_r) == pytest.approx((0.75 + 0.0 + 0.0) / 3)   # max(0, 1-R)


def test_truth_ratio_aggregates_at_extremes_have_no_nan_or_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.truth_ratio_retain([-1000.0, 1000.0]) == pytest.approx(0.5)
        assert metrics.truth_ratio_forget([-1000.0, 1000.0]) == 0.0


def test_ragged_wrong_answers_and_length_mismatch():
    np.testing.assert_allclose(metrics.log_truth_ratio([0.0, 0.0], [[1.0], [1.0, 3.0]]), [-1.0, -2.0])
    with pytest.raises(ValueError):
        metrics.log_truth_ratio([0.0, 0.0], [[1.0]])
    with pytest.raises(ValueError):
        metrics.log_truth_ratio([0.0], [[]])


def test_rouge_l_recall_known_strings():
    assert metrics.rouge_l_recall("the cat sat on the mat", "the cat sat") == pytest.approx(3 / 6)
    assert metrics.rouge_l_recall("Hello, World!", "hello world") == 1.0  # case, punctuation
    # the Porter stemmer maps cats->cat, running->run: LCS "the cat run" = 3 of 4 reference tokens
    s = metrics.rouge_scores("The cats were running", "the cat was run")
    assert s["rougeL_recall"] == pytest.approx(0.75) and s["rouge1_recall"] == pytest.approx(0.75)
    # recall, not precision: a long generation that contains the reference scores 1
    assert metrics.rouge_l_recall("Paris", "It is in Paris, France, of course.") == 1.0
    assert metrics.rouge_l_recall("Paris", "") == 0.0


def test_model_utility_is_harmonic_mean_and_zero_on_collapse():
    assert metrics.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    x = np.random.default_rng(0).uniform(0.05, 1.0, size=9)
    assert metrics.model_utility(x) == pytest.approx(hmean(x))
    assert metrics.model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError):
        metrics.model_utility([0.5, float("nan")])


def test_forget_quality_ks_pvalue():
    a = np.linspace(0.1, 0.9, 10)
    assert metrics.forget_quality(np.log(a), np.log(a)) == 1.0
    # fully separated samples of 10 and 10: exact two-sided p = 2 / C(20, 10)
    assert metrics.forget_quality(np.arange(10.0), np.arange(10.0) + 100) == pytest.approx(
        2 / math.comb(20, 10), rel=1e-9)
    # computed on log R it equals scipy's p-value on R itself (a monotone map)
    rng = np.random.default_rng(1)
    r1, r2 = rng.lognormal(0, 1, 40), rng.lognormal(0.5, 1, 30)
    assert metrics.forget_quality(np.log(r1), np.log(r2)) == pytest.approx(ks_2samp(r1, r2).pvalue)
