"""TOFU metrics as pure functions of per-item losses and texts (no model, numpy float64).

    from llm.evaluate import metrics
    log_r = metrics.log_truth_ratio(para_loss, pert_losses)      # per item, log R_i
    metrics.truth_ratio_forget(log_r), metrics.truth_ratio_retain(log_r)

Definitions (tofu-notes section 3, the form the legacy aggregator, the NPO code and open-unlearning
all compute; the paper's prose differs in places). ``L(a|q)`` is the MEAN token NLL over the
answer's label tokens (EOS included), so ``exp(-L)`` is a length-normalised probability:

* probability            mean_i exp(-L(a_i))
* normalised probability mean_i P(a_i) / (P(a_i) + sum_j P(w_ij))            (real authors, world facts)
* truth ratio            R_i = exp(L(c_i) - mean_j L(w_ij))   (geometric mean of the wrong answers'
                         normalised probabilities over the correct one's; open-unlearning's "score")
* truth-ratio aggregate  mean_i min(R_i, 1/R_i) on the forget split, mean_i max(0, 1 - R_i) elsewhere
* ROUGE-L recall         rouge-score's RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)
                         .score(target=ground_truth, prediction=generation)['rougeL'].recall
* model utility          harmonic mean of the nine retain / real-author / world-fact numbers
                         (0 if any is 0)
* forget quality         scipy.stats.ks_2samp(R(unlearned), R(retain model)).pvalue on the forget split

Everything is computed from log R in log space, so a collapsed model (losses in the hundreds) gives
0 or 1 where it should, never inf or NaN. The KS test is run on log R: a monotone map leaves the
statistic and p-value unchanged.

Numerics (``numerics=``): ``"exact"`` (default) is the above. ``"ou"`` reproduces open-unlearning's
guards and precision where they change a number (``src/evals/metrics/memorization.py``,
``src/evals/metrics/utils.py::evaluate_probability``, ``src/evals/metrics/privacy.py``), so a
summary can sit in an open-unlearning table:

* per-item mean losses are float32 (OU's CrossEntropyLoss on an fp32 model), and the per-item
  probabilities ``exp(-L)`` are taken in float32 (``torch.exp``), so they underflow to 0 once
  L > ~103.3; Prob and PERT_Prob average those float32 values;
* truth ratio ``R = exp(-mean_j L_wj) / (exp(-L_c) + 1e-10)`` in float64 from the float32 losses;
  aggregates ``mean min(R, 1 / (R + 1e-10))`` (forget) and ``mean max(0, 1 - R)`` (others);
* normalised probability ``P_c / (P_c + sum_j P_wj + 1e-10)`` from the float32 probabilities;
* forget quality: the KS test on those guarded R (the values OU stores as ``score``).

Once the answers' probabilities fall below 1e-10 (a collapsed model) the guards dominate: OU's
truth ratios go to 0 (so the retain / real-author / world-fact truth ratios read 1.0 and the forget
one ~0) and its normalised probabilities to 0, where the exact values stay what the losses say.
docs/eval-parity.md has the numbers.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import ks_2samp

__all__ = ["NUMERICS", "check_numerics", "probability", "item_probabilities",
           "normalised_probability", "log_truth_ratio", "truth_ratio", "truth_ratio_stat",
           "truth_ratio_score", "truth_ratio_forget", "truth_ratio_retain", "rouge_scores",
           "rouge_l_recall", "model_utility", "forget_quality", "extraction_strength"]

#: "exact": float64, log space, no guards; "ou": open-unlearning's float32 and 1e-10 guards
NUMERICS = ("exact", "ou")
OU_EPS = 1e-10  # open-unlearning's guard in truth_ratio and probability_w_options


def _losses(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _rows(wrong: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Wrong-answer losses per item; rows may differ in length (ragged)."""
    rows = [np.asarray(w, dtype=np.float64).reshape(-1) for w in wrong]
    if any(r.size == 0 for r in rows):
        raise ValueError("every item needs at least one wrong (perturbed) answer loss")
    return rows


def check_numerics(numerics: str) -> str:
    if numerics not in NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; use one of {', '.join(NUMERICS)}")
    return numerics


def _f32(x) -> np.ndarray:
    """open-unlearning's float32 per-item losses, back in float64 for the float64 arithmetic after."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def item_probabilities(avg_losses, numerics: str = "exact") -> np.ndarray:
    """Per item ``exp(-L)``: float64, or (``ou``) float32 as OU's evaluate_probability (0 below ~1e-45)."""
    if check_numerics(numerics) == "ou":
        return np.exp(-_f32(avg_losses).astype(np.float32)).astype(np.float64)
    return np.exp(-_losses(avg_losses))


def probability(avg_losses, numerics: str = "exact") -> float:
    """Mean length-normalised probability ``mean_i exp(-L_i)``."""
    return float(np.mean(item_probabilities(_losses(avg_losses), numerics)))


def normalised_probability(correct_losses, wrong_losses, numerics: str = "exact") -> np.ndarray:
    """Per item ``P(c) / (P(c) + sum_j P(w_j))`` with ``P = exp(-L)``, computed in log space
    (``ou``: ``P_c / (P_c + sum_j P_wj + 1e-10)`` on float32 probabilities, OU's probability_w_options)."""
    correct = _losses(correct_losses)
    rows = _rows(wrong_losses)
    if len(rows) != correct.size:
        raise ValueError(f"{correct.size} correct answers but {len(rows)} rows of wrong answers")
    if check_numerics(numerics) == "ou":
        c = item_probabilities(correct, "ou")
        w = np.array([item_probabilities(r, "ou").sum() for r in rows])
        return c / (c + w + OU_EPS)
    return np.array([np.exp(-c - logsumexp(np.concatenate(([-c], -w)))) for c, w in zip(correct, rows)])


def log_truth_ratio(correct_losses, wrong_losses) -> np.ndarray:
    """Per item ``log R_i = L(c_i) - mean_j L(w_ij)`` (R < 1: the model prefers the correct answer)."""
    correct = _losses(correct_losses)
    rows = _rows(wrong_losses)
    if len(rows) != correct.size:
        raise ValueError(f"{correct.size} correct answers but {len(rows)} rows of wrong answers")
    return correct - np.array([w.mean() for w in rows])


def truth_ratio(correct_losses, wrong_losses) -> np.ndarray:
    """Per item ``R_i`` (open-unlearning's ``value_by_index[i]['score']``)."""
    return np.exp(log_truth_ratio(correct_losses, wrong_losses))


def truth_ratio_stat(correct_losses, wrong_losses, numerics: str = "exact") -> np.ndarray:
    """The per-item truth-ratio statistic the aggregates and Forget Quality are computed from:
    ``log R`` (exact), or OU's guarded ``R = exp(-mean_j L_wj) / (exp(-L_c) + 1e-10)`` (ou)."""
    if check_numerics(numerics) == "exact":
        return log_truth_ratio(correct_losses, wrong_losses)
    correct = _f32(_losses(correct_losses))
    rows = [_f32(r) for r in _rows(wrong_losses)]
    if len(rows) != correct.size:
        raise ValueError(f"{correct.size} correct answers but {len(rows)} rows of wrong answers")
    wrong = np.exp(-np.array([r.mean() for r in rows]))
    return wrong / (np.exp(-correct) + OU_EPS)


def truth_ratio_score(stat, numerics: str = "exact") -> np.ndarray:
    """Per-item R for a log's ``score`` (exact: exp(log R) clipped to +-690 so JSON never holds inf)."""
    stat = _losses(stat)
    if check_numerics(numerics) == "exact":
        return np.exp(np.clip(stat, -690.0, 690.0))
    return stat


def truth_ratio_forget(stat, numerics: str = "exact") -> float:
    """Forget-split aggregate ``mean_i min(R_i, 1/R_i)`` (1: right and wrong equally likely);
    ``stat`` from ``truth_ratio_stat`` (log R exact; ou: ``mean min(R, 1 / (R + 1e-10))``)."""
    stat = _losses(stat)
    if check_numerics(numerics) == "ou":
        return float(np.mean(np.minimum(stat, 1.0 / (stat + OU_EPS))))
    return float(np.mean(np.exp(-np.abs(stat))))


def truth_ratio_retain(stat, numerics: str = "exact") -> float:
    """Retain / real-author / world-fact aggregate ``mean_i max(0, 1 - R_i)`` (higher is better)."""
    stat = _losses(stat)
    if check_numerics(numerics) == "ou":
        return float(np.mean(np.maximum(0.0, 1.0 - stat)))
    return float(np.mean(-np.expm1(np.minimum(stat, 0.0))))  # R >= 1 scores 0


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(ground_truth: str, generation: str) -> dict[str, float]:
    """The per-item ROUGE fields open-unlearning logs: rouge1_recall, rougeL_f1, rougeL_recall."""
    s = _scorer().score(target=ground_truth, prediction=generation)
    return {"rouge1_recall": s["rouge1"].recall, "rougeL_f1": s["rougeL"].fmeasure,
            "rougeL_recall": s["rougeL"].recall}


def rouge_l_recall(ground_truth: str, generation: str) -> float:
    """ROUGE-L recall: longest common subsequence / number of (stemmed) reference tokens."""
    return rouge_scores(ground_truth, generation)["rougeL_recall"]


def model_utility(components: Sequence[float]) -> float:
    """Harmonic mean of the components; 0 as soon as one is 0 (a collapsed model)."""
    x = _losses(components)
    if x.size == 0 or np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"model utility needs finite non-negative components, got {x.tolist()}")
    if np.any(x == 0):
        return 0.0
    return float(x.size / np.sum(1.0 / x))


def forget_quality(log_r_unlearned, log_r_retain) -> float:
    """Two-sided two-sample KS p-value between the two models' per-item truth ratios (forget split);
    both samples the same ``truth_ratio_stat`` (log R, or OU's guarded R under ``ou``)."""
    a, b = _losses(log_r_unlearned), _losses(log_r_retain)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs per-item truth ratios from both models")
    return float(ks_2samp(a, b).pvalue)


def extraction_strength(match) -> float:
    """open-unlearning's extraction strength of one item (``memorization.py``): ``1 - k / n`` for the
    smallest k whose suffix of greedy tokens all equal the labels (``match[k:]`` all true), over the
    n labelled tokens without the final EOS. OU's loop never tries the empty suffix, so an item with
    no matching suffix scores ``1 / n`` (k = n - 1), not 0; an item without tokens scores 0."""
    m = np.asarray(match, dtype=bool).reshape(-1)
    if m.size == 0:
        return 0.0
    suffix_ok = np.logical_and.accumulate(m[::-1])[::-1]  # suffix_ok[k] = all(m[k:])
    hits = np.flatnonzero(suffix_ok)
    k = int(hits[0]) if hits.size else m.size - 1
    return 1.0 - k / m.size
