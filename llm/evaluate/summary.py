"""TOFU summaries from per-item records: the eval tasks, Model Utility and Forget Quality.

A task's *record* maps item index (str) -> {"gt": L, "para": L, "pert": [L, ...], "rouge": {...},
"rouge_para": {...}, "rouge_pert": {field: [...]}, "tr_correct": L, "score": R}; L are mean token
NLLs. Every summary number is computed from the per-item losses and ROUGE scores of records,
whichever log layout they came from (ours, open-unlearning's, legacy TOFU's: see
llm/evaluate/logs.py), so all three are summarised identically, under one ``numerics``
(llm/evaluate/metrics.py: "exact", or "ou" = open-unlearning's float32 and 1e-10 guards). A stored truth
ratio ``score`` is never used for a number (llm/evaluate/logs.py only checks it); ``tr_correct``
is a legacy log's own truth-ratio "correct" loss (its paraphrase pass, on every task). The one
exception: a retain reference that holds only per-item truth-ratio scores (all open-unlearning's
Forget Quality reads from a retain log) is used through those scores.

Summary keys (open-unlearning's TOFU_SUMMARY.json names; floats, ``forget_quality`` None without a
retain reference), by ``--metrics``:
  paper: model_utility, forget_quality, forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE,
         the nine Model Utility components ``UTILITY_KEYS``, and the raw probabilities
         forget_Q_A_PARA_Prob, forget_Q_A_PERT_Prob, retain_Q_A_PARA_Prob, retain_Q_A_PERT_Prob,
         ra_Q_A_Prob, ra_Q_A_PERT_Prob, wf_Q_A_Prob, wf_Q_A_PERT_Prob; and "numerics"
  ou:    + privleak, extraction_strength (open-unlearning's default TOFU suite), and which retain
         AUC privleak used: privleak_reference ("retain_log", or "default": open-unlearning's
         0.5 without a retain log), privleak_reference_auc
  all:   + mia_auc {loss, zlib, min_k, min_k_plus_plus}, forget_Q_A_PARA_ROUGE,
         forget_Q_A_PARA_ROUGE_F1, forget_Q_A_PERT_ROUGE, forget_Q_A_PERT_ROUGE_F1 (ROUGE-L recall
         and F1 of the generation against the paraphrased / each perturbed answer)
"""
from __future__ import annotations

import numpy as np

from llm.evaluate import membership as eval_mia, metrics

__all__ = ["EvalError", "EVAL_SETS", "UTILITY_KEYS", "METRIC_SETS", "check_metrics", "metric_key",
           "tr_inputs", "task_summary", "summary_from_records", "first_items"]

#: task -> (eval split, is the "correct" answer of the truth ratio the paraphrase?, truth-ratio key)
EVAL_SETS = {
    "forget": (None, True, "forget_truth_ratio"),        # split: f"{forget}_perturbed"
    "retain": ("retain_perturbed", True, "retain_Truth_Ratio"),
    "ra": ("real_authors_perturbed", False, "ra_Truth_Ratio"),
    "wf": ("world_facts_perturbed", False, "wf_Truth_Ratio"),
}
UTILITY_KEYS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")
#: --metrics: paper (the paper's), ou (+ open-unlearning's default extras), all (+ MIA AUCs, ROUGE variants)
METRIC_SETS = ("paper", "ou", "all")


class EvalError(ValueError):
    """A user-fixable evaluation problem; the message is one line naming the fix."""


def check_metrics(which: str) -> str:
    if which not in METRIC_SETS:
        raise EvalError(f"unknown --metrics {which!r}; use paper, ou or all")
    return which


def check_numerics(numerics: str) -> str:
    """llm.evaluate.metrics' check (one list of modes), as an EvalError naming the flag."""
    try:
        return metrics.check_numerics(numerics)
    except ValueError:
        raise EvalError(f"unknown --numerics {numerics!r}; use {' or '.join(metrics.NUMERICS)}") from None


def metric_key(task: str, what: str) -> str:
    """The open-unlearning metric name of ``what`` (Prob, PARA_Prob, ROUGE, ..., "tr") on ``task``."""
    return EVAL_SETS[task][2] if what == "tr" else f"{task}_Q_A_{what}"


def tr_inputs(task: str, item: dict):
    """(correct loss, wrong losses) of one item's truth ratio, or None: the paraphrase on forget /
    retain, the answer on real authors / world facts (a legacy log's own ``tr_correct`` first)."""
    correct = item.get("tr_correct")
    if correct is None:
        correct = item.get("para") if EVAL_SETS[task][1] else item.get("gt")
    if correct is None or not item.get("pert"):
        return None
    return correct, item["pert"]


def _tr_stat(task: str, items, numerics: str) -> np.ndarray:
    pairs = [p for p in (tr_inputs(task, it) for it in items) if p is not None]
    if not pairs:
        return np.empty(0)
    return metrics.truth_ratio_stat([c for c, _ in pairs], [w for _, w in pairs], numerics)


def _mean_rouge(rouges: list, field: str) -> float:
    """Mean over items of a ROUGE field (a per-item list, for the perturbed answers, is averaged first)."""
    return float(np.mean([np.mean(r[field]) for r in rouges]))


def task_summary(task: str, rec: dict, numerics: str = "exact", which: str = "paper") -> dict:
    items = list(rec.values())

    def column(field):
        return [it[field] for it in items if it.get(field) is not None]

    out = {}
    gt, pert = column("gt"), column("pert")
    if gt:
        out[metric_key(task, "Prob")] = metrics.probability(gt, numerics)
    if EVAL_SETS[task][1] and column("para"):
        out[metric_key(task, "PARA_Prob")] = metrics.probability(column("para"), numerics)
    if pert:
        out[metric_key(task, "PERT_Prob")] = float(np.mean(
            [np.mean(metrics.item_probabilities(p, numerics)) for p in pert]))
    if not EVAL_SETS[task][1]:
        pairs = [(it["gt"], it["pert"]) for it in items if it.get("gt") is not None and it.get("pert")]
        if pairs:
            out[metric_key(task, "Prob_normalised")] = float(np.mean(metrics.normalised_probability(
                [c for c, _ in pairs], [w for _, w in pairs], numerics)))
    rouge = column("rouge")
    if rouge:
        out[metric_key(task, "ROUGE")] = _mean_rouge(rouge, "rougeL_recall")
    stat = _tr_stat(task, items, numerics)
    if stat.size:
        agg = metrics.truth_ratio_forget if task == "forget" else metrics.truth_ratio_retain
        out[metric_key(task, "tr")] = agg(stat, numerics)
    if which == "all":
        for field, what in (("rouge_para", "PARA_ROUGE"), ("rouge_pert", "PERT_ROUGE")):
            rouges = column(field)
            if rouges:
                out[metric_key(task, what)] = _mean_rouge(rouges, "rougeL_recall")
                out[metric_key(task, what) + "_F1"] = _mean_rouge(rouges, "rougeL_f1")
    return out


def summary_from_records(records: dict, retain_ref: dict | None, numerics: str = "exact",
                         which: str = "paper", mia_scores: dict | None = None,
                         extraction: list | None = None, mia_k: float | None = None) -> dict:
    """The summary of one model's records. ``retain_ref`` (llm/evaluate/logs.py ``retain_reference``):
    the retain model's forget-split truth-ratio inputs and MIA scores (and their k); ``mia_scores``
    (attack -> {"forget", "holdout"} per-item scores, made with Min-K% fraction ``mia_k``) and
    ``extraction`` (per-item extraction strengths) are needed for ``which`` ou / all."""
    check_numerics(numerics)
    summary: dict = {}
    for task in EVAL_SETS:
        summary.update(task_summary(task, records.get(task, {}), numerics, check_metrics(which)))
    missing = [k for k in UTILITY_KEYS + ("forget_truth_ratio",) if k not in summary]
    if missing:
        raise EvalError(f"the log lacks {', '.join(missing)}; it must cover the forget, retain, "
                        f"real-author and world-fact tasks (re-run the full evaluation)")
    summary["model_utility"] = metrics.model_utility([summary[k] for k in UTILITY_KEYS])
    summary["forget_quality"] = None
    if retain_ref is not None:
        own = _tr_stat("forget", records["forget"].values(), numerics)
        ref = _reference_stat(retain_ref["tr"], numerics)
        if own.size != ref.size:
            raise EvalError(f"the retain reference has {ref.size} forget items but this "
                            f"log has {own.size}; use the same forget split and pass --ds-size N "
                            f"to compare the first N items of both (legacy TOFU logs use 300)")
        summary["forget_quality"] = metrics.forget_quality(own, ref)
    if which != "paper":
        if mia_scores is None or extraction is None:
            raise EvalError(f"--metrics {which} needs MIA scores (mia_* entries) and "
                            f"extraction_strength; evaluate the model with --metrics {which}")
        retain_mia = None if retain_ref is None else retain_ref.get("mia")
        if retain_ref is not None and (retain_mia is None or "min_k" not in retain_mia):
            raise EvalError(f"{retain_ref.get('name', 'the retain log')} has no per-item mia_min_k "
                            f"scores for privleak; evaluate the retain model with --metrics ou or all")
        if retain_ref is not None:
            try:
                eval_mia.check_same_k(mia_k, retain_ref.get("mia_k"), retain_ref.get("name", "the retain log"))
            except ValueError as e:
                raise EvalError(str(e)) from None
        summary.update(eval_mia.mia_summary(mia_scores, retain_mia, which, numerics))
        summary["extraction_strength"] = float(np.mean(extraction))
    summary["numerics"] = numerics
    return summary


def _reference_stat(tr: dict, numerics: str) -> np.ndarray:
    """The retain model's truth-ratio statistic: from its losses, or (a log holding only scores)
    from its stored R: log R under exact, R itself under ou."""
    if "pairs" in tr:
        return metrics.truth_ratio_stat([c for c, _ in tr["pairs"]], [w for _, w in tr["pairs"]], numerics)
    scores = np.asarray(tr["scores"], dtype=np.float64)
    return np.log(np.maximum(scores, 1e-300)) if numerics == "exact" else scores


def first_items(rec: dict, ds_size: int | None) -> dict:
    if ds_size is None:
        return rec
    return dict(sorted(rec.items(), key=lambda kv: _index_order(kv[0]))[:ds_size])


def _index_order(index: str):
    return (0, int(index)) if str(index).lstrip("-").isdigit() else (1, str(index))
