"""TOFU per-item logs on disk: open-unlearning's TOFU_EVAL.json layout (ours too) and legacy TOFU's.

Per-item log (TOFU_EVAL.json) = open-unlearning's layout: one entry per summary metric with
``agg_value`` and ``value_by_index`` {"0": {"prob", "avg_loss"} | {"score"} | {"rougeL_recall",
"rouge1_recall", "rougeL_f1", "input", "ground_truth", "generation"}, ...}, so open-unlearning can
use ours as ``retain_logs_path`` and we read theirs; plus ``eval_info`` (split, ds_size, template,
numerics, metrics). With ``--metrics ou|all`` also open-unlearning's ``mia_*`` entries
(llm/evaluate/membership.py: its privleak reads ``mia_min_k`` from a retain log) and ``extraction_strength``;
with ``all`` also ``forget_Q_A_PARA_ROUGE`` / ``forget_Q_A_PERT_ROUGE`` (per item the ROUGE fields
against the paraphrased answer / lists over the perturbed answers, as open-unlearning stores them).
Legacy TOFU's ``eval_log_aggregated.json`` (or a folder of ``eval_*.json``) is converted to that
layout on reading.

Top-down: layout <-> records (llm/evaluate/summary.py), reading (any layout), writing, and the
summary of a log (``summarize``; ``retain_reference`` for Forget Quality and privleak).

The rule of ``summarize`` (``--from-logs``): every aggregate is recomputed from the per-item
values (answer losses: ``avg_loss``, else ``-log prob``; ROUGE scores; per-item MIA and
extraction-strength scores) under the chosen numerics; the log's stored aggregates (``agg_value``)
and derived per-item values (truth-ratio ``score``) are never used, only compared with the
recomputation by ``disagreements``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from infra.files import NonFiniteError, check_finite, loads_finite, write_json
from llm.evaluate import membership as eval_mia, metrics
from llm.evaluate.summary import (EVAL_SETS, UTILITY_KEYS, EvalError, check_metrics, first_items,
                              metric_key, summary_from_records, task_summary, tr_inputs)

__all__ = ["EVAL_FILE", "SUMMARY_FILE", "LEGACY_FILES", "records_of", "render_log", "load_eval_log",
           "write_eval", "summarize", "disagreements", "forget_tr_inputs", "retain_reference"]

EVAL_FILE, SUMMARY_FILE = "TOFU_EVAL.json", "TOFU_SUMMARY.json"
#: legacy TOFU file name -> task
LEGACY_FILES = {"eval_log_forget.json": "forget", "eval_log.json": "retain",
                "eval_real_author_wo_options.json": "ra", "eval_real_world_wo_options.json": "wf"}


# ---- open-unlearning layout <-> records ---------------------------------------------------------

def records_of(per_item: dict) -> dict:
    """Records per task from an open-unlearning-layout log (ours, theirs, or converted legacy)."""
    records: dict = {}
    for task in EVAL_SETS:
        rec: dict = {}

        def take(metric, field, value_of):
            try:
                for idx, v in ((per_item.get(metric) or {}).get("value_by_index") or {}).items():
                    if v is not None and value_of(v) is not None:
                        rec.setdefault(str(idx), {})[field] = value_of(v)
            except (AttributeError, TypeError, ValueError) as e:
                raise EvalError(f"malformed {metric} entry ({type(e).__name__}: {e}); re-create "
                                f"the log or restore the original file") from None

        take(metric_key(task, "Prob"), "gt", lambda v: _avg_loss(v))
        if EVAL_SETS[task][1]:
            take(metric_key(task, "PARA_Prob"), "para", lambda v: _avg_loss(v))
        take(metric_key(task, "PERT_Prob"), "pert", lambda v: _avg_loss(v, many=True))
        take(metric_key(task, "ROUGE"), "rouge", lambda v: v if v.get("rougeL_recall") is not None else None)
        take(metric_key(task, "tr"), "score", lambda v: None if v.get("score") is None else float(v["score"]))
        take(metric_key(task, "tr"), "tr_correct",
             lambda v: None if v.get("correct_avg_loss") is None else float(v["correct_avg_loss"]))
        take(metric_key(task, "PARA_ROUGE"), "rouge_para",
             lambda v: v if v.get("rougeL_recall") is not None else None)
        take(metric_key(task, "PERT_ROUGE"), "rouge_pert",
             lambda v: v if v.get("rougeL_recall") is not None else None)
        if rec:
            records[task] = rec
    return records


def _avg_loss(v: dict, many: bool = False):
    """Mean token NLL of an open-unlearning probability entry (avg_loss, else -log prob)."""
    loss = v.get("avg_loss")
    if loss is None and v.get("prob") is not None:
        prob = v["prob"]
        loss = [-math.log(max(p, 1e-300)) for p in prob] if many else -math.log(max(prob, 1e-300))
    if loss is None:
        return None
    if many:
        return [float(x) for x in (loss if isinstance(loss, list) else [loss])]
    return float(loss[0] if isinstance(loss, list) else loss)


def render_log(records: dict, summary: dict, info: dict | None = None,
               numerics: str = "exact") -> dict:
    """Records + summary -> open-unlearning TOFU_EVAL.json layout; the derived per-item values
    (probabilities, normalised probabilities, truth-ratio scores) under ``numerics``."""
    log: dict = {}

    def entry(metric, by_index):
        if by_index:
            log[metric] = {"agg_value": summary.get(metric), "value_by_index": by_index}

    def prob(losses):
        p = metrics.item_probabilities(losses, numerics)
        return [float(x) for x in p]

    for task, rec in records.items():
        entry(metric_key(task, "Prob"), {i: {"prob": prob([it["gt"]])[0], "avg_loss": it["gt"]}
                                         for i, it in rec.items() if "gt" in it})
        if EVAL_SETS[task][1]:
            entry(metric_key(task, "PARA_Prob"), {i: {"prob": prob([it["para"]])[0], "avg_loss": it["para"]}
                                                  for i, it in rec.items() if "para" in it})
        entry(metric_key(task, "PERT_Prob"), {i: {"prob": prob(it["pert"]), "avg_loss": list(it["pert"])}
                                              for i, it in rec.items() if it.get("pert")})
        if not EVAL_SETS[task][1]:
            entry(metric_key(task, "Prob_normalised"), {
                i: {"prob": float(metrics.normalised_probability([it["gt"]], [it["pert"]], numerics)[0])}
                for i, it in rec.items() if "gt" in it and it.get("pert")})
        entry(metric_key(task, "ROUGE"), {i: it["rouge"] for i, it in rec.items() if it.get("rouge")})
        entry(metric_key(task, "PARA_ROUGE"), {i: it["rouge_para"] for i, it in rec.items()
                                               if it.get("rouge_para")})
        entry(metric_key(task, "PERT_ROUGE"), {i: it["rouge_pert"] for i, it in rec.items()
                                               if it.get("rouge_pert")})
        scores = {}
        for i, it in rec.items():
            pair = tr_inputs(task, it)
            if pair is not None:  # exact: clipped so that the JSON never holds Infinity
                stat = metrics.truth_ratio_stat([pair[0]], [pair[1]], numerics)
                scores[i] = {"score": float(metrics.truth_ratio_score(stat, numerics)[0])}
                if it.get("tr_correct") is not None:
                    scores[i]["correct_avg_loss"] = it["tr_correct"]
        entry(metric_key(task, "tr"), scores)
    log["model_utility"] = {"agg_value": summary.get("model_utility")}
    log["forget_quality"] = {"agg_value": summary.get("forget_quality")}
    if "privleak" in summary:
        log["privleak"] = {"agg_value": summary["privleak"]}
    if info:
        log["eval_info"] = info
    return log


# ---- reading logs -----------------------------------------------------------------------------

def load_eval_log(path) -> dict:
    """A per-item log in open-unlearning layout, from ours/open-unlearning's TOFU_EVAL.json, a
    legacy TOFU ``eval_log_aggregated.json``, a single legacy ``eval_*.json``, or a folder of them."""
    path = Path(path)
    if path.is_dir():
        if (path / EVAL_FILE).is_file():
            return load_eval_log(path / EVAL_FILE)
        found = {name: _read_json(path / name) for name in LEGACY_FILES if (path / name).is_file()}
        if not found:
            raise EvalError(f"{path} holds neither {EVAL_FILE} nor legacy eval_log*.json files; "
                            f"pass the per-item log file itself")
        return _from_legacy(found, path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise EvalError(f"{path}: expected a JSON object (a TOFU per-item log), got "
                        f"{type(data).__name__}; pass TOFU_EVAL.json or eval_log_aggregated.json")
    if any(name in data for name in LEGACY_FILES):
        return _from_legacy(data, path)
    if "avg_gt_loss" in data:
        if path.name not in LEGACY_FILES:
            raise EvalError(f"{path}: a single legacy task log must keep its legacy name "
                            f"({', '.join(LEGACY_FILES)}) so its task is known")
        return _from_legacy({path.name: data}, path)
    if not any(isinstance(v, dict) and "value_by_index" in v for v in data.values()):
        raise EvalError(f"{path}: not a TOFU per-item log (no metric with value_by_index, no legacy "
                        f"eval_log*.json keys); pass TOFU_EVAL.json or eval_log_aggregated.json")
    return data


def _read_json(path: Path):
    if not path.is_file():
        raise EvalError(f"log file {str(path)!r} not found; pass an existing TOFU_EVAL.json or "
                        f"legacy eval_log_aggregated.json")
    try:
        return loads_finite(path.read_text(encoding="utf-8"), str(path))
    except NonFiniteError as e:
        raise EvalError(str(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: malformed JSON ({getattr(e, 'msg', e)}); re-create or "
                        f"re-download the log") from None


def _from_legacy(files: dict, path: Path) -> dict:
    """Legacy TOFU per-task dicts (field -> {index: value}) -> open-unlearning layout."""
    records = {}
    for name, data in files.items():
        if name not in LEGACY_FILES:
            continue
        task = LEGACY_FILES[name]
        need = ("avg_gt_loss", "average_perturb_loss", "avg_paraphrased_loss", "rougeL_recall")
        lacking = [f for f in need if not isinstance(data.get(f), dict)]
        if lacking:
            raise EvalError(f"{path}: legacy {name} lacks {', '.join(lacking)}; use an unmodified "
                            f"TOFU eval log")
        rec = {}
        try:
            for idx, gt in data["avg_gt_loss"].items():
                item = {"gt": float(gt), "pert": [float(x) for x in data["average_perturb_loss"][idx]]}
                para = float(data["avg_paraphrased_loss"][idx])
                if EVAL_SETS[task][1]:
                    item["para"] = para
                # Legacy's aggregator takes the truth ratio's "correct" loss from its paraphrase
                # pass on every task (on real authors / world facts that re-scores the answer).
                item["tr_correct"] = para
                item["rouge"] = {"rougeL_recall": float(data["rougeL_recall"][idx])}
                if "rouge1_recall" in data:
                    item["rouge"]["rouge1_recall"] = float(data["rouge1_recall"][idx])
                text = (data.get("generated_text") or {}).get(idx)
                if isinstance(text, list) and len(text) == 3:
                    item["rouge"].update(input=text[0], ground_truth=text[1], generation=text[2])
                rec[str(idx)] = item
        except (KeyError, TypeError, ValueError) as e:
            raise EvalError(f"{path}: legacy {name} has an inconsistent item ({type(e).__name__}: "
                            f"{e}); use an unmodified TOFU eval log") from None
        records[task] = rec
    summary: dict = {}
    for task, rec in records.items():
        summary.update(task_summary(task, rec))
    if all(k in summary for k in UTILITY_KEYS):
        summary["model_utility"] = metrics.model_utility([summary[k] for k in UTILITY_KEYS])
    return render_log(records, summary, {"source": f"legacy TOFU log {path.name}"})


def write_eval(out_dir, result: dict) -> tuple[Path, Path]:
    """Write TOFU_EVAL.json (per item) then TOFU_SUMMARY.json, each atomically."""
    out_dir = Path(out_dir)
    write_json(out_dir / EVAL_FILE, result["per_item"])
    write_json(out_dir / SUMMARY_FILE, result["summary"])
    return out_dir / EVAL_FILE, out_dir / SUMMARY_FILE


# ---- the summary of a log ------------------------------------------------------------------

def summarize(per_item, retain_per_item=None, ds_size: int | None = None, numerics: str = "exact",
              which: str = "paper") -> dict:
    """Summary (llm/evaluate/summary.py) of a per-item log, every number recomputed from its per-item
    values under ``numerics``; Forget Quality (and with ``which`` ou/all, privleak) if a retain
    log is given. Either log may be given loaded (a dict) or as a path (then errors name the file).
    """
    check_metrics(which)
    if ds_size is not None and ds_size < 1:
        raise EvalError(f"--ds-size must be >= 1, got {ds_size}")
    where = None
    if not isinstance(per_item, dict):
        where, per_item = per_item, load_eval_log(per_item)
    own_split = (per_item.get("eval_info") or {}).get("forget_split")
    retain_ref = retain_reference(retain_per_item, own_split, ds_size)
    try:
        records = {t: first_items(r, ds_size) for t, r in records_of(per_item).items()}
        mia_scores = extraction = None
        if which != "paper":
            mia_scores, extraction = _mia_of(per_item, which)
        own_k = (per_item.get("eval_info") or {}).get("mia_k")
        return summary_from_records(records, retain_ref, numerics, which, mia_scores, extraction,
                                    own_k)
    except EvalError as e:
        if where is None:
            raise
        raise EvalError(f"{where}: {e}") from None


def _mia_of(per_item: dict, which: str):
    try:
        scores = eval_mia.read_mia(per_item)
    except ValueError as e:
        raise EvalError(str(e)) from None
    es = ((per_item.get("extraction_strength") or {}).get("value_by_index") or {})
    if not scores or "min_k" not in scores or not es:
        raise EvalError(f"the log has no per-item mia_min_k / extraction_strength scores; "
                        f"evaluate the model with --metrics {which}")
    return scores, [float(v["score"]) for v in es.values()]


def disagreements(per_item: dict, summary: dict, rtol: float = 1e-5, atol: float = 1e-8) -> list[str]:
    """One line per stored aggregate (``agg_value``) that differs from the recomputed summary."""
    out = []
    for key, value in summary.items():
        stored = (per_item.get(key) or {}).get("agg_value") if isinstance(per_item.get(key), dict) else None
        if isinstance(value, dict) or value is None or not isinstance(stored, (int, float)):
            continue
        if not math.isclose(float(stored), float(value), rel_tol=rtol, abs_tol=atol):
            out.append(f"{key}: stored {float(stored):.6g}, recomputed {float(value):.6g}")
    return out


def forget_tr_inputs(per_item: dict, ds_size: int | None = None) -> dict:
    """The forget split's per-item truth-ratio values, in index order: {"pairs": [(correct loss,
    [wrong losses])]} from the answer losses, or, for a log that holds only per-item truth-ratio
    scores (all that open-unlearning's Forget Quality reads from a retain log), {"scores": [R]}."""
    rec = first_items(records_of(per_item).get("forget", {}), ds_size)
    pairs = [p for p in (tr_inputs("forget", it) for it in rec.values()) if p is not None]
    if pairs:
        return {"pairs": pairs}
    scores = [it["score"] for it in rec.values() if it.get("score") is not None]
    if scores:
        return {"scores": scores}
    raise EvalError("the log has no forget-split truth ratios (forget_Q_A_PARA_Prob and "
                    "forget_Q_A_PERT_Prob, forget_truth_ratio, or eval_log_forget.json); evaluate "
                    "that model with --forget forgetXX first")


def retain_reference(retain_logs, forget: str | None, ds_size: int | None) -> dict | None:
    """The retain model's forget-split truth-ratio values ("tr", see ``forget_tr_inputs``) and
    per-item MIA scores ("mia", None if its log has none), from a path or a loaded per-item log."""
    if retain_logs is None:
        return None
    per_item = retain_logs if isinstance(retain_logs, dict) else load_eval_log(retain_logs)
    name = "the retain log" if isinstance(retain_logs, dict) else f"retain log {retain_logs}"
    try:
        check_finite(per_item, name)  # a loaded log may not have come through our reader
    except NonFiniteError as e:
        raise EvalError(str(e)) from None
    theirs = (per_item.get("eval_info") or {}).get("forget_split")
    if forget and theirs and theirs != forget:
        raise EvalError(f"{name} was evaluated on {theirs}, not {forget}; pass a retain log of "
                        f"the same forget split")
    try:
        tr = forget_tr_inputs(per_item, ds_size)
    except EvalError:
        raise EvalError(f"{name} has no forget-split truth ratios (forget_truth_ratio / "
                        f"eval_log_forget.json); evaluate the retain model with --forget "
                        f"{forget or 'forgetXX'} first") from None
    try:
        mia_scores = eval_mia.read_mia(per_item)
    except ValueError as e:
        raise EvalError(f"{name}: {e}") from None
    return {"tr": tr, "mia": mia_scores, "name": name,
            "mia_k": (per_item.get("eval_info") or {}).get("mia_k")}
