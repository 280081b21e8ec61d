"""MIA scores and privleak on toy cases computed by hand (llm/evaluate/mia.py)."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from llm.evaluate import mia


def test_min_k_takes_the_lowest_fraction_of_token_logprobs():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert mia.min_k_score(lp, k=0.4) == pytest.approx(4.5)     # int(5 x 0.4) = 2: -5, -4
    assert mia.min_k_score(lp, k=0.1) == pytest.approx(5.0)     # max(1, int(0.5)) = 1
    assert mia.min_k_score(lp, k=1.0) == pytest.approx(3.0)     # all: minus the mean
    assert mia.min_k_score([], k=0.4) == 0.0


def test_min_k_plus_plus_standardises_by_the_vocab_moments():
    # z = (lp - mu) / sqrt(var): (-1 + 1.5) / 0.5 = 1, (-2 + 1) / 2 = -0.5; k = 0.5 keeps one: -0.5
    assert mia.min_k_plus_plus_score([-1.0, -2.0], [-1.5, -1.0], [0.25, 4.0], k=0.5) == pytest.approx(0.5)
    # a zero variance is floored at 1e-6 (sd 1e-3), as open-unlearning clamps it
    assert mia.min_k_plus_plus_score([-1.0], [-1.5], [0.0], k=1.0) == pytest.approx(-500.0)
    with pytest.raises(ValueError, match="one mu and var per token"):
        mia.min_k_plus_plus_score([-1.0, -2.0], [-1.0], [1.0])


def test_vocab_moments_by_hand():
    p = np.array([[0.25, 0.75], [0.5, 0.5]])
    mu, var = mia.vocab_moments(np.log(p))
    l1, l3 = math.log(0.25), math.log(0.75)
    mu0 = 0.25 * l1 + 0.75 * l3
    assert mu[0] == pytest.approx(mu0)
    assert var[0] == pytest.approx(0.25 * l1 ** 2 + 0.75 * l3 ** 2 - mu0 ** 2)
    assert mu[1] == pytest.approx(math.log(0.5)) and var[1] == pytest.approx(0.0, abs=1e-12)


def test_loss_and_zlib_scores():
    assert mia.loss_score(2.5) == 2.5
    text = "The author was born in Paris in 1960."
    assert mia.zlib_score(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode("utf-8"))))
    # repetitive text compresses to fewer bytes, so the same loss scores higher (less member-like)
    assert mia.zlib_score(2.0, "a" * 60) > mia.zlib_score(2.0, text + " Her father was a chef.")


def test_auc_conventions():
    assert mia.auc([1.0, 2.0], [3.0, 4.0]) == 1.0       # members strictly more likely (lower loss)
    assert mia.auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert mia.auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5  # identical distributions
    assert mia.auc([1.0, 3.0], [2.0, 4.0]) == 0.75       # 3 of the 4 (forget, holdout) pairs ordered
    assert mia.auc([1.0, 2.0], [2.0, 3.0]) == 0.875      # the tie (2, 2) counts 1/2: 3.5 / 4
    with pytest.raises(ValueError, match="finite"):
        mia.auc([1.0, math.inf], [2.0, 3.0])


def test_privleak_sign_as_open_unlearning_reports_it():
    # memorised forget set (AUC 1) vs a retain model at chance: -100 (OU's finetuned models: ~ -99.8)
    assert mia.privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert mia.privleak(0.5, 0.5) == 0.0                 # behaves like the retain model
    # forget items LESS likely than holdout (over-unlearned): ((1 - .2) - .5) / .5 x 100 = +60
    assert mia.privleak(0.2, 0.5) == pytest.approx(60.0)
    assert mia.privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / (0.4 + 1e-10) * 100)
    # a retain reference at AUC 1: undefined (exact), OU's guard gives ~1e12 (ou)
    assert mia.privleak(0.5, 1.0) is None
    assert mia.privleak(0.5, 1.0, "ou") == pytest.approx(0.5 / 1e-10 * 100)


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, float("nan")])
def test_k_outside_0_1_is_refused(k):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        mia.check_k(k)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        mia.min_k_score([-1.0], k=k)
