"""Membership-inference scores on TOFU and the privacy leak built on them (pure numpy, no model).

    from llm.evaluate import mia
    s_forget = [mia.min_k_score(lp, k=0.4) for lp in forget_token_logprobs]     # per item
    s_hold = [mia.min_k_score(lp, k=0.4) for lp in holdout_token_logprobs]
    auc = mia.auc(s_forget, s_hold)                 # 1.0: forget items far more likely than holdout
    mia.privleak(auc, auc_of_the_retain_model)      # about -100 for a model that memorised them

Definitions follow open-unlearning (OU, locuslab/open-unlearning, ``src/evals/metrics/mia/*.py``,
``src/evals/metrics/privacy.py``; configs ``configs/eval/tofu_metrics/mia_*.yaml``, ``privleak.yaml``):

* Every score is signed like a loss: HIGHER means LESS likely a member (OU's note in
  ``mia/__init__.py``). Members are the forget set, non-members TOFU's holdout set of the same size
  (``holdout01/05/10``: other fictitious authors, never trained on).
* ``loss``     OU ``LOSSAttack``: the item's mean token NLL over the answer's labels (EOS included),
               i.e. our ``avg_loss``.
* ``zlib``     OU ``ZLIBAttack``: ``avg_loss / len(zlib.compress(text.encode("utf-8")))`` where text is
               the decoded answer labels (special tokens skipped).
* ``min_k``    OU ``MinKProbAttack`` (Shi et al. 2023): minus the mean of the ``max(1, int(n*k))``
               lowest token log-probs, over the answer's labelled tokens EXCLUDING the final EOS
               (OU ``tokenwise_logprobs`` drops it). TOFU config: k = 0.4.
* ``min_k_plus_plus`` OU ``MinKPlusPlusAttack`` (Zhang et al. 2024): each token's log-prob is
               standardised by the mean and variance of log p under the model's own next-token
               distribution at that position, ``(log p(x_t) - mu_t) / sqrt(max(var_t, 1e-6))``, then
               scored as min_k. TOFU config: k = 0.4.
* ``auc``      OU ``mia_auc``: ``roc_auc_score(labels, scores)`` with forget labelled 0 and holdout 1;
               here the same number from scipy's Mann-Whitney U (AUC = U / (n_forget n_holdout), ties
               counted 1/2). 1.0 when forget items are strictly more likely (lower scores) than every
               holdout item, 0.5 when the two score distributions are identical.
* ``privleak`` OU ``privleak`` (MUSE's PrivLeak): OU stores the AUC above but MUSE reports 1 - AUC,
               so OU computes ``(A_model - A_retain) / (A_retain + 1e-10) * 100`` with
               ``A = 1 - auc``. Sign, as OU's own tables report it: a model that still knows its
               forget set (auc -> 1, A -> 0) against a retain model at auc 0.5 gives -100 (OU's
               finetuned MUSE-News model: -99.81); the retain model itself gives 0; a model pushed
               past the retain model (forget LESS likely than holdout, auc < A_retain's auc) gives a
               positive leak. Under ``--numerics ou`` the denominator carries OU's 1e-10 (a retain
               reference at AUC 1 then gives ~1e12), under ``exact`` that case is None (undefined).
               OU's TOFU ``privleak`` is built on ``mia_min_k`` (not min-k++), read
               from the retain model's log as ``mia_min_k.agg_value``; without that log OU uses
               its ``ref_value`` 0.5 (privacy.py, with a warning), and so do we
               (``DEFAULT_RETAIN_AUC``; the summary records which reference was used). Both AUCs
               must come from the same k (llm/evaluate/membership.py ``check_same_k``).
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
from scipy.stats import mannwhitneyu

__all__ = ["ATTACKS", "DEFAULT_K", "PRIVLEAK_ATTACK", "DEFAULT_RETAIN_AUC", "check_k", "loss_score", "zlib_score",
           "min_k_score", "min_k_plus_plus_score", "vocab_moments", "auc", "privleak"]

#: attack name -> open-unlearning's metric key in TOFU_EVAL.json
ATTACKS = {"loss": "mia_loss", "zlib": "mia_zlib", "min_k": "mia_min_k",
           "min_k_plus_plus": "mia_min_k_plus_plus"}
DEFAULT_K = 0.4          # OU configs/eval/tofu_metrics/mia_min_k*.yaml
PRIVLEAK_ATTACK = "min_k"  # OU configs/eval/tofu_metrics/privleak.yaml pre_compute: mia_min_k
DEFAULT_RETAIN_AUC = 0.5   # OU privleak.yaml ref_value: the retain AUC used without a retain log
VAR_FLOOR = 1e-6         # OU min_k_plus_plus.py: sigma = clamp(sigma, min=1e-6) (a variance)


def check_k(k: float) -> float:
    """k must lie in (0, 1]: the fraction of lowest-probability tokens kept."""
    if not (isinstance(k, (int, float)) and 0.0 < float(k) <= 1.0):
        raise ValueError(f"--mia-k must be in (0, 1], got {k!r}; open-unlearning's TOFU value is 0.4")
    return float(k)


def loss_score(avg_loss: float) -> float:
    """LOSS attack: the mean token NLL of the answer (higher: less likely a member)."""
    return float(avg_loss)


def zlib_score(avg_loss: float, text: str) -> float:
    """zlib-normalised loss: mean token NLL over the zlib-compressed byte length of the answer."""
    return float(avg_loss) / max(len(zlib.compress(text.encode("utf-8"))), 1)


def _bottom_k_mean(values: np.ndarray, k: float) -> float:
    if values.size == 0:
        return 0.0  # OU scores an item without answer tokens as 0
    n = max(1, int(values.size * check_k(k)))
    return float(np.mean(np.sort(values)[:n]))


def min_k_score(token_logprobs: Sequence[float], k: float = DEFAULT_K) -> float:
    """Min-K% Prob: minus the mean of the lowest ``max(1, int(n k))`` token log-probs."""
    return -_bottom_k_mean(np.asarray(token_logprobs, dtype=np.float64).reshape(-1), k)


def min_k_plus_plus_score(token_logprobs: Sequence[float], mu: Sequence[float], var: Sequence[float],
                          k: float = DEFAULT_K) -> float:
    """Min-K%++: Min-K% over ``(log p(x_t) - mu_t) / sqrt(max(var_t, 1e-6))`` (see ``vocab_moments``)."""
    lp = np.asarray(token_logprobs, dtype=np.float64).reshape(-1)
    mu, var = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (mu, var))
    if not lp.size == mu.size == var.size:
        raise ValueError(f"min_k_plus_plus needs one mu and var per token, got {lp.size}, "
                         f"{mu.size}, {var.size}")
    return -_bottom_k_mean((lp - mu) / np.sqrt(np.maximum(var, VAR_FLOOR)), k)


def vocab_moments(vocab_logprobs) -> tuple[np.ndarray, np.ndarray]:
    """Per position, mean and variance of log p under p itself: ``mu = sum p log p``,
    ``var = sum p (log p)^2 - mu^2`` (OU's formula). ``vocab_logprobs``: [T, V] log-softmax rows."""
    lp = np.asarray(vocab_logprobs, dtype=np.float64)
    p = np.exp(lp)
    mu = (p * lp).sum(-1)
    return mu, (p * lp * lp).sum(-1) - mu * mu


def auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """OU's MIA AUC (forget = 0, holdout = 1, loss-signed scores) via the Mann-Whitney U identity."""
    f = np.asarray(forget_scores, dtype=np.float64).reshape(-1)
    h = np.asarray(holdout_scores, dtype=np.float64).reshape(-1)
    if f.size == 0 or h.size == 0:
        raise ValueError("an MIA AUC needs scores of forget and holdout items")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(h))):
        raise ValueError("MIA scores must be finite")
    # U of the holdout sample = #{(h, f): h > f} + 1/2 #{h == f} = AUC x n_f x n_h
    return float(mannwhitneyu(h, f, alternative="two-sided").statistic / (f.size * h.size))


def privleak(auc_model: float, auc_retain: float, numerics: str = "exact") -> float | None:
    """OU's privleak in percent: ``((1 - auc_model) - (1 - auc_retain)) / (1 - auc_retain) * 100``.

    ``ou``: OU's denominator ``(1 - auc_retain) + 1e-10``, so a retain reference at AUC 1 gives
    values near 1e12; ``exact``: undefined there, returned as None."""
    a_model, a_retain = 1.0 - float(auc_model), 1.0 - float(auc_retain)
    if numerics == "ou":
        return (a_model - a_retain) / (a_retain + 1e-10) * 100.0
    return None if a_retain == 0.0 else (a_model - a_retain) / a_retain * 100.0
