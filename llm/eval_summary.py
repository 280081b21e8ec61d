"""TOFU summaries from per-item records: the eval tasks, Model Utility and Forget Quality.

A task's *record* maps item index (str) -> {"gt": L, "para": L, "pert": [L, ...], "rouge": {...},
"score": R}; L are mean token NLLs, R a stored truth ratio. Every summary number is computed from
records, whichever log layout they came from (ours, open-unlearning's, legacy TOFU's: see
llm/eval_logs.py), so all three are summarised identically. Metric definitions: llm/metrics.py.

Summary keys (open-unlearning's TOFU_SUMMARY.json names; all floats, ``forget_quality`` is None
without a retain reference):
  model_utility, forget_quality, forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE,
  the nine Model Utility components ``UTILITY_KEYS``, and the raw probabilities
  forget_Q_A_PARA_Prob, forget_Q_A_PERT_Prob, retain_Q_A_PARA_Prob, retain_Q_A_PERT_Prob,
  ra_Q_A_Prob, ra_Q_A_PERT_Prob, wf_Q_A_Prob, wf_Q_A_PERT_Prob.
"""
from __future__ import annotations

import math

import numpy as np

from llm import metrics

__all__ = ["EvalError", "TASKS", "UTILITY_KEYS", "metric_key", "log_ratio", "task_summary",
           "summary_from_records", "first_items"]

#: task -> (eval split, is the "correct" answer of the truth ratio the paraphrase?, truth-ratio key)
TASKS = {
    "forget": (None, True, "forget_truth_ratio"),        # split: f"{forget}_perturbed"
    "retain": ("retain_perturbed", True, "retain_Truth_Ratio"),
    "ra": ("real_authors_perturbed", False, "ra_Truth_Ratio"),
    "wf": ("world_facts_perturbed", False, "wf_Truth_Ratio"),
}
UTILITY_KEYS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


class EvalError(ValueError):
    """A user-fixable evaluation problem; the message is one line naming the fix."""


def metric_key(task: str, what: str) -> str:
    """The open-unlearning metric name of ``what`` (Prob, PARA_Prob, ROUGE, ..., "tr") on ``task``."""
    return TASKS[task][2] if what == "tr" else f"{task}_Q_A_{what}"


def log_ratio(task: str, item: dict) -> float | None:
    """log R of one item: the stored ratio if the log has one (it is what the producing codebase
    aggregated: legacy TOFU computes it from its own paraphrase pass, open-unlearning adds 1e-10),
    else from the losses."""
    if item.get("score") is not None:
        return math.log(max(float(item["score"]), 1e-300))
    correct = item.get("para") if TASKS[task][1] else item.get("gt")
    if correct is not None and item.get("pert"):
        return float(metrics.log_truth_ratio([correct], [item["pert"]])[0])
    return None


def task_summary(task: str, rec: dict) -> dict:
    items = list(rec.values())

    def column(field):
        return [it[field] for it in items if it.get(field) is not None]

    out = {}
    gt, pert = column("gt"), column("pert")
    if gt:
        out[metric_key(task, "Prob")] = metrics.probability(gt)
    if TASKS[task][1] and column("para"):
        out[metric_key(task, "PARA_Prob")] = metrics.probability(column("para"))
    if pert:
        out[metric_key(task, "PERT_Prob")] = float(np.mean([np.mean(np.exp(-np.asarray(p))) for p in pert]))
    if not TASKS[task][1]:
        pairs = [(it["gt"], it["pert"]) for it in items if it.get("gt") is not None and it.get("pert")]
        if pairs:
            out[metric_key(task, "Prob_normalised")] = float(np.mean(metrics.normalised_probability(
                [c for c, _ in pairs], [w for _, w in pairs])))
    rouge = [it["rouge"]["rougeL_recall"] for it in items if it.get("rouge")]
    if rouge:
        out[metric_key(task, "ROUGE")] = float(np.mean(rouge))
    log_r = [r for r in (log_ratio(task, it) for it in items) if r is not None]
    if log_r:
        agg = metrics.truth_ratio_forget if task == "forget" else metrics.truth_ratio_retain
        out[metric_key(task, "tr")] = agg(log_r)
    return out


def summary_from_records(records: dict, retain_log_r: np.ndarray | None) -> dict:
    summary: dict = {}
    for task in TASKS:
        summary.update(task_summary(task, records.get(task, {})))
    missing = [k for k in UTILITY_KEYS + ("forget_truth_ratio",) if k not in summary]
    if missing:
        raise EvalError(f"the log lacks {', '.join(missing)}; it must cover the forget, retain, "
                        f"real-author and world-fact tasks (re-run the full evaluation)")
    summary["model_utility"] = metrics.model_utility([summary[k] for k in UTILITY_KEYS])
    summary["forget_quality"] = None
    if retain_log_r is not None:
        own = np.asarray([r for r in (log_ratio("forget", it) for it in records["forget"].values())
                          if r is not None])
        if own.size != retain_log_r.size:
            raise EvalError(f"the retain reference has {retain_log_r.size} forget items but this "
                            f"log has {own.size}; use the same forget split and pass --ds-size N "
                            f"to compare the first N items of both (legacy TOFU logs use 300)")
        summary["forget_quality"] = metrics.forget_quality(own, retain_log_r)
    return summary


def first_items(rec: dict, ds_size: int | None) -> dict:
    if ds_size is None:
        return rec
    return dict(sorted(rec.items(), key=lambda kv: _index_order(kv[0]))[:ds_size])


def _index_order(index: str):
    return (0, int(index)) if str(index).lstrip("-").isdigit() else (1, str(index))
