"""TOFU per-item logs on disk: open-unlearning's TOFU_EVAL.json layout (ours too) and legacy TOFU's.

Per-item log (TOFU_EVAL.json) = open-unlearning's layout: one entry per summary metric with
``agg_value`` and ``value_by_index`` {"0": {"prob", "avg_loss"} | {"score"} | {"rougeL_recall",
"rouge1_recall", "rougeL_f1", "input", "ground_truth", "generation"}, ...}, so open-unlearning can
use ours as ``retain_logs_path`` and we read theirs; plus ``eval_info`` (split, ds_size, template).
Legacy TOFU's ``eval_log_aggregated.json`` (or a folder of ``eval_*.json``) is converted to that
layout on reading.

Top-down: layout <-> records (llm/eval_summary.py), reading (any layout), writing, and the
summary of a log (``summarize``; ``forget_log_ratios`` / ``retain_reference`` for Forget Quality).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from infra.files import write_json
from llm import metrics
from llm.eval_summary import (TASKS, UTILITY_KEYS, EvalError, first_items, log_ratio, metric_key,
                              summary_from_records, task_summary)

__all__ = ["EVAL_FILE", "SUMMARY_FILE", "LEGACY_FILES", "records_of", "render_log", "load_eval_log",
           "write_eval", "summarize", "forget_log_ratios", "retain_reference"]

EVAL_FILE, SUMMARY_FILE = "TOFU_EVAL.json", "TOFU_SUMMARY.json"
#: legacy TOFU file name -> task
LEGACY_FILES = {"eval_log_forget.json": "forget", "eval_log.json": "retain",
                "eval_real_author_wo_options.json": "ra", "eval_real_world_wo_options.json": "wf"}


# ---- open-unlearning layout <-> records ---------------------------------------------------------

def records_of(per_item: dict) -> dict:
    """Records per task from an open-unlearning-layout log (ours, theirs, or converted legacy)."""
    records: dict = {}
    for task in TASKS:
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
        if TASKS[task][1]:
            take(metric_key(task, "PARA_Prob"), "para", lambda v: _avg_loss(v))
        take(metric_key(task, "PERT_Prob"), "pert", lambda v: _avg_loss(v, many=True))
        take(metric_key(task, "ROUGE"), "rouge", lambda v: v if v.get("rougeL_recall") is not None else None)
        take(metric_key(task, "tr"), "score", lambda v: None if v.get("score") is None else float(v["score"]))
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


def render_log(records: dict, summary: dict, info: dict | None = None) -> dict:
    """Records + summary -> open-unlearning TOFU_EVAL.json layout."""
    log: dict = {}

    def entry(metric, by_index):
        log[metric] = {"agg_value": summary.get(metric), "value_by_index": by_index}

    for task, rec in records.items():
        prob = lambda loss: {"prob": math.exp(-loss), "avg_loss": loss}  # noqa: E731
        entry(metric_key(task, "Prob"), {i: prob(it["gt"]) for i, it in rec.items() if "gt" in it})
        if TASKS[task][1]:
            entry(metric_key(task, "PARA_Prob"), {i: prob(it["para"]) for i, it in rec.items() if "para" in it})
        entry(metric_key(task, "PERT_Prob"), {i: {"prob": [math.exp(-x) for x in it["pert"]],
                                            "avg_loss": list(it["pert"])}
                                        for i, it in rec.items() if it.get("pert")})
        if not TASKS[task][1]:
            entry(metric_key(task, "Prob_normalised"), {
                i: {"prob": float(metrics.normalised_probability([it["gt"]], [it["pert"]])[0])}
                for i, it in rec.items() if "gt" in it and it.get("pert")})
        entry(metric_key(task, "ROUGE"), {i: it["rouge"] for i, it in rec.items() if it.get("rouge")})
        # Clipped so that the JSON never holds Infinity (|log R| > 690 only for a collapsed model).
        entry(metric_key(task, "tr"), {i: {"score": math.exp(min(max(r, -690.0), 690.0))} for i, r in
                                 ((i, log_ratio(task, it)) for i, it in rec.items()) if r is not None})
    log["model_utility"] = {"agg_value": summary.get("model_utility")}
    log["forget_quality"] = {"agg_value": summary.get("forget_quality")}
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
        return json.loads(path.read_text(encoding="utf-8"))
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
                if TASKS[task][1]:
                    item["para"] = para
                # Legacy's aggregator takes the truth ratio's "correct" loss from its paraphrase
                # pass on every task (on real authors / world facts that re-scores the answer).
                item["score"] = math.exp(float(metrics.log_truth_ratio([para], [item["pert"]])[0]))
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

def summarize(per_item, retain_per_item=None, ds_size: int | None = None) -> dict:
    """Summary (see module docstring) of a per-item log; Forget Quality if a retain log is given.

    Either log may be given loaded (a dict) or as a path (then errors name the file).
    """
    if ds_size is not None and ds_size < 1:
        raise EvalError(f"--ds-size must be >= 1, got {ds_size}")
    where = None
    if not isinstance(per_item, dict):
        where, per_item = per_item, load_eval_log(per_item)
    own_split = (per_item.get("eval_info") or {}).get("forget_split")
    retain_log_r = retain_reference(retain_per_item, own_split, ds_size)
    try:
        records = {t: first_items(r, ds_size) for t, r in records_of(per_item).items()}
        return summary_from_records(records, retain_log_r)
    except EvalError as e:
        if where is None:
            raise
        raise EvalError(f"{where}: {e}") from None


def forget_log_ratios(per_item: dict, ds_size: int | None = None) -> np.ndarray:
    """Per-item log truth ratios on the forget split, in index order (Forget Quality's sample)."""
    rec = first_items(records_of(per_item).get("forget", {}), ds_size)
    log_r = [r for r in (log_ratio("forget", it) for it in rec.values()) if r is not None]
    if not log_r:
        raise EvalError("the log has no forget-split truth ratios (forget_truth_ratio or "
                        "eval_log_forget.json); evaluate that model with --forget forgetXX first")
    return np.asarray(log_r)


def retain_reference(retain_logs, forget: str | None, ds_size: int | None):
    """Forget-split log truth ratios of the retain model from a path or a loaded per-item log."""
    if retain_logs is None:
        return None
    per_item = retain_logs if isinstance(retain_logs, dict) else load_eval_log(retain_logs)
    name = "the retain log" if isinstance(retain_logs, dict) else f"retain log {retain_logs}"
    theirs = (per_item.get("eval_info") or {}).get("forget_split")
    if forget and theirs and theirs != forget:
        raise EvalError(f"{name} was evaluated on {theirs}, not {forget}; pass a retain log of "
                        f"the same forget split")
    try:
        return forget_log_ratios(per_item, ds_size)
    except EvalError:
        raise EvalError(f"{name} has no forget-split truth ratios (forget_truth_ratio / "
                        f"eval_log_forget.json); evaluate the retain model with --forget "
                        f"{forget or 'forgetXX'} first") from None
