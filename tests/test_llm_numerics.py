"""--numerics exact vs ou (llm/evaluate/metrics.py): answers less likely than 1e-10, values by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from llm.evaluate import metrics

# A collapsed model: the correct answer's mean token NLL is 30 (P = e^-30 = 9.4e-14 < 1e-10), the
# wrong answers' 28 and 32 (geometric-mean probability also e^-30): right and wrong equally likely.
LC, LW = 30.0, [28.0, 32.0]


def test_truth_ratio_exact_vs_open_unlearning_guard():
    # exact: R = exp(30 - 30) = 1 -> retain-style 1 - R = 0, forget-style min(R, 1/R) = 1
    exact = metrics.truth_ratio_stat([LC], [LW], "exact")
    assert metrics.truth_ratio_retain(exact, "exact") == pytest.approx(0.0, abs=1e-12)
    assert metrics.truth_ratio_forget(exact, "exact") == pytest.approx(1.0)
    # OU: R = exp(-30) / (exp(-30) + 1e-10), by hand
    p = math.exp(-30.0)
    r = p / (p + 1e-10)
    assert r == pytest.approx(9.35e-4, rel=1e-3)
    ou = metrics.truth_ratio_stat([LC], [LW], "ou")
    assert ou[0] == pytest.approx(r, rel=1e-6)
    assert metrics.truth_ratio_retain(ou, "ou") == pytest.approx(1.0 - r, rel=1e-9)
    assert metrics.truth_ratio_forget(ou, "ou") == pytest.approx(min(r, 1.0 / (r + 1e-10)), rel=1e-6)
    assert metrics.truth_ratio_score(ou, "ou")[0] == ou[0]


def test_normalised_probability_exact_vs_open_unlearning_guard():
    wrong = [[LC, LC, LC]]
    assert metrics.normalised_probability([LC], wrong, "exact")[0] == pytest.approx(0.25)
    p = math.exp(-30.0)
    assert metrics.normalised_probability([LC], wrong, "ou")[0] == pytest.approx(p / (4 * p + 1e-10), rel=1e-6)


def test_float32_probabilities_underflow_as_in_open_unlearning():
    # exp(-110) = 1.7e-48 is below float32's smallest subnormal (1.4e-45): OU stores prob 0
    assert metrics.probability([110.0], "exact") == pytest.approx(math.exp(-110.0), rel=1e-12)
    assert metrics.probability([110.0], "ou") == 0.0
    assert metrics.probability([1.0, 2.0], "ou") == pytest.approx(
        float(np.mean(np.exp(-np.float32([1.0, 2.0])))), rel=1e-7)
    # a loss above 745 underflows even float64 in OU's ratio: R = 0 / (P_c + 1e-10) = 0, finite
    ou = metrics.truth_ratio_stat([800.0], [[900.0]], "ou")
    assert ou[0] == 0.0 and metrics.truth_ratio_forget(ou, "ou") == 0.0
    exact = metrics.truth_ratio_stat([800.0], [[900.0]])  # log R = 800 - 900: exact e^-100
    assert metrics.truth_ratio_forget(exact, "exact") == pytest.approx(math.exp(-100.0), rel=1e-12)


def test_forget_quality_takes_either_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(30, 1, (40, 1)), rng.normal(0.5, 0.2, (40, 1))
    w = a + rng.normal(0, 1, (40, 3))
    for numerics in metrics.NUMERICS:
        own = metrics.truth_ratio_stat(a[:, 0], w, numerics)
        ref = metrics.truth_ratio_stat(b[:, 0], b + 0.1, numerics)
        assert 0.0 <= metrics.forget_quality(own, ref) <= 1.0
    with pytest.raises(ValueError, match="unknown numerics"):
        metrics.probability([1.0], "fast")


def test_extraction_strength_follows_open_unlearnings_loop():
    assert metrics.extraction_strength([True, True, True, True]) == 1.0    # k = 0
    assert metrics.extraction_strength([False, True, True, True]) == 0.75  # k = 1
    assert metrics.extraction_strength([True, False, True, True]) == 0.5   # k = 2
    assert metrics.extraction_strength([True, True, True, False]) == 0.25  # no suffix: k = n - 1
    assert metrics.extraction_strength([]) == 0.0
