"""TOFU metrics as pure functions of per-item losses and texts (no model, numpy float64).

    from llm import metrics
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
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import ks_2samp

__all__ = ["probability", "normalised_probability", "log_truth_ratio", "truth_ratio",
           "truth_ratio_forget", "truth_ratio_retain", "rouge_scores", "rouge_l_recall",
           "model_utility", "forget_quality"]


def _losses(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _rows(wrong: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Wrong-answer losses per item; rows may differ in length (ragged)."""
    rows = [np.asarray(w, dtype=np.float64).reshape(-1) for w in wrong]
    if any(r.size == 0 for r in rows):
        raise ValueError("every item needs at least one wrong (perturbed) answer loss")
    return rows


def probability(avg_losses) -> float:
    """Mean length-normalised probability ``mean_i exp(-L_i)``."""
    return float(np.mean(np.exp(-_losses(avg_losses))))


def normalised_probability(correct_losses, wrong_losses) -> np.ndarray:
    """Per item ``P(c) / (P(c) + sum_j P(w_j))`` with ``P = exp(-L)``, computed in log space."""
    correct = _losses(correct_losses)
    rows = _rows(wrong_losses)
    if len(rows) != correct.size:
        raise ValueError(f"{correct.size} correct answers but {len(rows)} rows of wrong answers")
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


def truth_ratio_forget(log_r) -> float:
    """Forget-split aggregate ``mean_i min(R_i, 1/R_i)`` (1: right and wrong equally likely)."""
    return float(np.mean(np.exp(-np.abs(_losses(log_r)))))


def truth_ratio_retain(log_r) -> float:
    """Retain / real-author / world-fact aggregate ``mean_i max(0, 1 - R_i)`` (higher is better)."""
    return float(np.mean(-np.expm1(np.minimum(_losses(log_r), 0.0))))  # R >= 1 scores 0


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
    """Two-sided two-sample KS p-value between the two models' per-item truth ratios (forget split)."""
    a, b = _losses(log_r_unlearned), _losses(log_r_retain)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs per-item truth ratios from both models")
    return float(ks_2samp(a, b).pvalue)
