"""TOFU evaluation: Forget Quality and Model Utility, logs compatible with open-unlearning and legacy TOFU.

    python -m llm eval --model runs/npo --forget forget10 --retain-logs runs/retain90/TOFU_EVAL.json --out runs/npo/eval
        -> writes DIR/TOFU_EVAL.json (per item) and DIR/TOFU_SUMMARY.json, prints the summary
    python -m llm eval --from-logs LOG [--retain-logs LOG] [--ds-size 300]
        -> recomputes the summary from a per-item log (ours, open-unlearning's TOFU_EVAL.json, or
           legacy TOFU's eval_log_aggregated.json / folder of eval_*.json) and prints it as JSON

Python API: ``evaluate_model`` (scores a model), ``summarize`` (per-item log -> summary, no model),
``load_eval_log``, ``write_eval``, and ``make_eval_fn`` (the trainer's every-k-steps callback,
``eval_fn(model, tokenizer, step, epoch) -> summary``).

Summary keys (open-unlearning's TOFU_SUMMARY.json names; all floats, ``forget_quality`` is None
without a retain reference):
  model_utility, forget_quality, forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE,
  the nine Model Utility components retain_Q_A_Prob, retain_Q_A_ROUGE, retain_Truth_Ratio,
  ra_Q_A_Prob_normalised, ra_Q_A_ROUGE, ra_Truth_Ratio, wf_Q_A_Prob_normalised, wf_Q_A_ROUGE,
  wf_Truth_Ratio, and the raw probabilities forget_Q_A_PARA_Prob, forget_Q_A_PERT_Prob,
  retain_Q_A_PARA_Prob, retain_Q_A_PERT_Prob, ra_Q_A_Prob, ra_Q_A_PERT_Prob, wf_Q_A_Prob,
  wf_Q_A_PERT_Prob.

Per-item log (TOFU_EVAL.json) = open-unlearning's layout: one entry per metric name above with
``agg_value`` and ``value_by_index`` {"0": {"prob", "avg_loss"} | {"score"} | {"rougeL_recall",
"rouge1_recall", "rougeL_f1", "input", "ground_truth", "generation"}, ...}, so open-unlearning can
use ours as ``retain_logs_path`` and we read theirs; plus ``eval_info`` (split, ds_size, template).
Metric definitions: llm/metrics.py. Eval sets (tofu-notes 3.1): forgetXX_perturbed, retain_perturbed,
real_authors_perturbed, world_facts_perturbed; ``--ds-size 300`` keeps the first 300 items of each,
as legacy TOFU did (default: all items, as open-unlearning).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from llm import metrics

__all__ = ["EvalError", "EvalPlan", "TASKS", "UTILITY_KEYS", "evaluate_model", "summarize",
           "load_eval_log", "write_eval", "make_eval_fn", "answer_losses", "forget_log_ratios", "main"]

EVAL_FILE, SUMMARY_FILE = "TOFU_EVAL.json", "TOFU_SUMMARY.json"

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
#: legacy TOFU file name -> task
LEGACY_FILES = {"eval_log_forget.json": "forget", "eval_log.json": "retain",
                "eval_real_author_wo_options.json": "ra", "eval_real_world_wo_options.json": "wf"}
_FORGET_RE = re.compile(r"^forget(\d\d)$")
#: scoring batches hold rows at least (1 - MAX_PADDING) x as long as their longest row
MAX_PADDING = 0.1


class EvalError(ValueError):
    """A user-fixable evaluation problem; the message is one line naming the fix."""


# ---- per-item records -------------------------------------------------------------------------
# A task's record maps item index (str) -> {"gt": L, "para": L, "pert": [L, ...], "rouge": {...},
# "score": R}; L are mean token NLLs. Every summary number is computed from records, whichever log
# layout they came from, so ours, open-unlearning's and legacy logs are summarised identically.

def _key(task: str, what: str) -> str:
    return TASKS[task][2] if what == "tr" else f"{task}_Q_A_{what}"


def _log_r(task: str, item: dict) -> float | None:
    """log R of one item: the stored ratio if the log has one (it is what the producing codebase
    aggregated: legacy TOFU computes it from its own paraphrase pass, open-unlearning adds 1e-10),
    else from the losses."""
    if item.get("score") is not None:
        return math.log(max(float(item["score"]), 1e-300))
    correct = item.get("para") if TASKS[task][1] else item.get("gt")
    if correct is not None and item.get("pert"):
        return float(metrics.log_truth_ratio([correct], [item["pert"]])[0])
    return None


def _task_summary(task: str, rec: dict) -> dict:
    items = list(rec.values())

    def column(field):
        return [it[field] for it in items if it.get(field) is not None]

    out = {}
    gt, pert = column("gt"), column("pert")
    if gt:
        out[_key(task, "Prob")] = metrics.probability(gt)
    if TASKS[task][1] and column("para"):
        out[_key(task, "PARA_Prob")] = metrics.probability(column("para"))
    if pert:
        out[_key(task, "PERT_Prob")] = float(np.mean([np.mean(np.exp(-np.asarray(p))) for p in pert]))
    if not TASKS[task][1]:
        pairs = [(it["gt"], it["pert"]) for it in items if it.get("gt") is not None and it.get("pert")]
        if pairs:
            out[_key(task, "Prob_normalised")] = float(np.mean(metrics.normalised_probability(
                [c for c, _ in pairs], [w for _, w in pairs])))
    rouge = [it["rouge"]["rougeL_recall"] for it in items if it.get("rouge")]
    if rouge:
        out[_key(task, "ROUGE")] = float(np.mean(rouge))
    log_r = [r for r in (_log_r(task, it) for it in items) if r is not None]
    if log_r:
        agg = metrics.truth_ratio_forget if task == "forget" else metrics.truth_ratio_retain
        out[_key(task, "tr")] = agg(log_r)
    return out


def forget_log_ratios(per_item: dict, ds_size: int | None = None) -> np.ndarray:
    """Per-item log truth ratios on the forget split, in index order (Forget Quality's sample)."""
    rec = _truncate(_records(per_item).get("forget", {}), ds_size)
    log_r = [r for r in (_log_r("forget", it) for it in rec.values()) if r is not None]
    if not log_r:
        raise EvalError("the log has no forget-split truth ratios (forget_truth_ratio or "
                        "eval_log_forget.json); evaluate that model with --forget forgetXX first")
    return np.asarray(log_r)


def _summary_from_records(records: dict, retain_log_r: np.ndarray | None) -> dict:
    summary: dict = {}
    for task in TASKS:
        summary.update(_task_summary(task, records.get(task, {})))
    missing = [k for k in UTILITY_KEYS + ("forget_truth_ratio",) if k not in summary]
    if missing:
        raise EvalError(f"the log lacks {', '.join(missing)}; it must cover the forget, retain, "
                        f"real-author and world-fact tasks (re-run the full evaluation)")
    summary["model_utility"] = metrics.model_utility([summary[k] for k in UTILITY_KEYS])
    summary["forget_quality"] = None
    if retain_log_r is not None:
        own = np.asarray([r for r in (_log_r("forget", it) for it in records["forget"].values())
                          if r is not None])
        if own.size != retain_log_r.size:
            raise EvalError(f"the retain reference has {retain_log_r.size} forget items but this "
                            f"log has {own.size}; use the same forget split and pass --ds-size N "
                            f"to compare the first N items of both (legacy TOFU logs use 300)")
        summary["forget_quality"] = metrics.forget_quality(own, retain_log_r)
    return summary


def _truncate(rec: dict, ds_size: int | None) -> dict:
    if ds_size is None:
        return rec
    return dict(sorted(rec.items(), key=lambda kv: _index_order(kv[0]))[:ds_size])


def _index_order(index: str):
    return (0, int(index)) if str(index).lstrip("-").isdigit() else (1, str(index))


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
    retain_log_r = _retain_reference(retain_per_item, own_split, ds_size)
    try:
        records = {t: _truncate(r, ds_size) for t, r in _records(per_item).items()}
        return _summary_from_records(records, retain_log_r)
    except EvalError as e:
        if where is None:
            raise
        raise EvalError(f"{where}: {e}") from None


# ---- open-unlearning layout <-> records ---------------------------------------------------------

def _records(per_item: dict) -> dict:
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

        take(_key(task, "Prob"), "gt", lambda v: _avg_loss(v))
        if TASKS[task][1]:
            take(_key(task, "PARA_Prob"), "para", lambda v: _avg_loss(v))
        take(_key(task, "PERT_Prob"), "pert", lambda v: _avg_loss(v, many=True))
        take(_key(task, "ROUGE"), "rouge", lambda v: v if v.get("rougeL_recall") is not None else None)
        take(_key(task, "tr"), "score", lambda v: None if v.get("score") is None else float(v["score"]))
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


def _render(records: dict, summary: dict, info: dict | None = None) -> dict:
    """Records + summary -> open-unlearning TOFU_EVAL.json layout."""
    log: dict = {}

    def entry(metric, by_index):
        log[metric] = {"agg_value": summary.get(metric), "value_by_index": by_index}

    for task, rec in records.items():
        prob = lambda loss: {"prob": math.exp(-loss), "avg_loss": loss}  # noqa: E731
        entry(_key(task, "Prob"), {i: prob(it["gt"]) for i, it in rec.items() if "gt" in it})
        if TASKS[task][1]:
            entry(_key(task, "PARA_Prob"), {i: prob(it["para"]) for i, it in rec.items() if "para" in it})
        entry(_key(task, "PERT_Prob"), {i: {"prob": [math.exp(-x) for x in it["pert"]],
                                            "avg_loss": list(it["pert"])}
                                        for i, it in rec.items() if it.get("pert")})
        if not TASKS[task][1]:
            entry(_key(task, "Prob_normalised"), {
                i: {"prob": float(metrics.normalised_probability([it["gt"]], [it["pert"]])[0])}
                for i, it in rec.items() if "gt" in it and it.get("pert")})
        entry(_key(task, "ROUGE"), {i: it["rouge"] for i, it in rec.items() if it.get("rouge")})
        # Clipped so that the JSON never holds Infinity (|log R| > 690 only for a collapsed model).
        entry(_key(task, "tr"), {i: {"score": math.exp(min(max(r, -690.0), 690.0))} for i, r in
                                 ((i, _log_r(task, it)) for i, it in rec.items()) if r is not None})
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
        summary.update(_task_summary(task, rec))
    if all(k in summary for k in UTILITY_KEYS):
        summary["model_utility"] = metrics.model_utility([summary[k] for k in UTILITY_KEYS])
    return _render(records, summary, {"source": f"legacy TOFU log {path.name}"})


# ---- scoring a model --------------------------------------------------------------------------

def _check_forget(forget: str) -> None:
    if not _FORGET_RE.match(str(forget)) or not 1 <= int(forget[-2:]) <= 99:
        raise EvalError(f"unknown forget split {forget!r}; use forget01, forget05 or forget10 "
                        f"(the splits TOFU ships perturbed answers for)")


def answer_losses(model, encoded: list[dict], pad_id: int, max_batch_tokens: int = 16384) -> np.ndarray:
    """Mean token NLL of each encoded QA (answer + EOS labels), batched by length with dynamic padding.

    Sequences are sorted longest first and packed so that rows x padded width <= max_batch_tokens
    and no row is padded by more than MAX_PADDING of the width: the correct, paraphrased and
    perturbed answers of all tasks share a few forwards of similar-length rows. Only
    the positions from the batch's earliest answer token on go through the output head
    (``logits_to_keep``), which skips the prompt's logits; a model without that argument gets a
    full forward.
    """
    import torch

    from llm.formatting import IGNORE_INDEX, collate
    from llm.models import sequence_logprob, token_counts

    out = np.empty(len(encoded), dtype=np.float64)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    device = next(model.parameters()).device
    trim = True
    start = 0
    with torch.inference_mode():
        while start < len(order):
            width = len(encoded[order[start]]["input_ids"])
            chunk = order[start:start + max(1, max_batch_tokens // width)]
            # cut where rows get much shorter than the batch width: padding is wasted compute
            chunk = [i for i in chunk if len(encoded[i]["input_ids"]) >= (1 - MAX_PADDING) * width]
            batch = {k: v.to(device) for k, v in collate([encoded[i] for i in chunk], pad_id).items()}
            labels = batch["labels"]
            # logits at position t predict token t+1: keep from one before the first label on
            first = int((labels != IGNORE_INDEX).int().argmax(1).min())
            inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          use_cache=False)
            logits = None
            if trim and first > 1:
                try:
                    logits = model(**inputs, logits_to_keep=width - first + 1).logits
                except TypeError:  # this model's forward has no logits_to_keep
                    trim = False
            if logits is None:
                logits = model(**inputs).logits
            labels = labels[:, width - logits.shape[1]:]
            nll = -sequence_logprob(logits, labels) / token_counts(labels)
            out[chunk] = nll.double().cpu().numpy()
            start += len(chunk)
    return out


class EvalPlan:
    """Eval items of every task, tokenized once (unique QA pairs and prompts) for one tokenizer."""

    def __init__(self, tokenizer, forget: str, data_dir, template: str, ds_size: int | None):
        from llm.data import load_split
        from llm.formatting import encode_prompt, encode_qa, format_prompt

        _check_forget(forget)
        self.forget, self.template, self.ds_size = forget, template, ds_size
        self.items: dict[str, list[dict]] = {}
        for task, (split, _, _) in TASKS.items():
            rows = load_split(split or f"{forget}_perturbed", data_dir)
            self.items[task] = rows[:ds_size] if ds_size else rows
        pairs: dict[tuple[str, str], int] = {}
        questions: dict[str, int] = {}
        for task, rows in self.items.items():
            for row in rows:
                answers = [row["answer"], *row["perturbed_answer"]]
                if TASKS[task][1]:
                    answers.append(row["paraphrased_answer"])
                for a in answers:
                    pairs.setdefault((row["question"], a), len(pairs))
                questions.setdefault(row["question"], len(questions))
        self.pair_index, self.question_index = pairs, questions
        self.encoded = [encode_qa(tokenizer, q, a, template) for q, a in pairs]
        self.prompts = [encode_prompt(tokenizer, q, template) for q in questions]
        self.prompt_texts = {q: format_prompt(tokenizer, q, template) for q in questions}

    def info(self) -> dict:
        return {"forget_split": self.forget, "ds_size": self.ds_size, "template": self.template,
                "n_items": {t: len(r) for t, r in self.items.items()}}

    def records(self, losses: np.ndarray, generations: list[str] | None) -> dict:
        records = {}
        for task, rows in self.items.items():
            rec = {}
            for i, row in enumerate(rows):
                q = row["question"]
                item = {"gt": float(losses[self.pair_index[(q, row["answer"])]]),
                        "pert": [float(losses[self.pair_index[(q, a)]]) for a in row["perturbed_answer"]]}
                if TASKS[task][1]:
                    item["para"] = float(losses[self.pair_index[(q, row["paraphrased_answer"])]])
                if generations is not None:
                    gen = generations[self.question_index[q]]
                    item["rouge"] = {**metrics.rouge_scores(row["answer"], gen),
                                     "input": self.prompt_texts[q],
                                     "ground_truth": row["answer"], "generation": gen}
                rec[str(i)] = item
            records[task] = rec
        return records


def _run(model, tokenizer, plan: EvalPlan, retain_log_r, batch_size: int, max_new_tokens: int,
         max_batch_tokens: int) -> dict:
    from llm.formatting import pad_id
    from llm.generation import greedy_generate

    was_training = model.training
    model.eval()
    try:
        pad = pad_id(tokenizer)
        losses = answer_losses(model, plan.encoded, pad, max_batch_tokens)
        generations = greedy_generate(model, tokenizer, plan.prompts, batch_size, max_new_tokens)
    finally:
        model.train(was_training)
    records = plan.records(losses, generations)
    summary = _summary_from_records(records, retain_log_r)
    return {"summary": summary, "per_item": _render(records, summary, plan.info())}


def _retain_reference(retain_logs, forget: str | None, ds_size: int | None):
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


def evaluate_model(model, tokenizer, forget: str, data_dir=None, template: str = "llama2",
                   retain_logs=None, ds_size: int | None = None, batch_size: int = 32,
                   max_new_tokens: int = 200, max_batch_tokens: int = 16384) -> dict:
    """Score ``model`` on the TOFU eval sets: {"summary": {...}, "per_item": TOFU_EVAL.json layout}.

    retain_logs: path or loaded per-item log of the retain model (for Forget Quality), or None.
    """
    _check_args(forget, ds_size, batch_size, max_new_tokens)
    retain_log_r = _retain_reference(retain_logs, forget, ds_size)
    plan = EvalPlan(tokenizer, forget, data_dir, template, ds_size)
    return _run(model, tokenizer, plan, retain_log_r, batch_size, max_new_tokens, max_batch_tokens)


def _check_args(forget, ds_size, batch_size, max_new_tokens) -> None:
    _check_forget(forget)
    if ds_size is not None and ds_size < 1:
        raise EvalError(f"--ds-size must be >= 1, got {ds_size}")
    if batch_size < 1 or max_new_tokens < 1:
        raise EvalError("--batch-size and --max-new-tokens must be >= 1")


def make_eval_fn(forget: str, data_dir=None, template: str = "llama2", retain_logs=None,
                 ds_size: int | None = None, batch_size: int = 32, max_new_tokens: int = 200,
                 max_batch_tokens: int = 16384, log_dir=None):
    """The trainer's callback ``eval_fn(model, tokenizer, step, epoch) -> summary``.

    Data and the retain reference are loaded now (errors surface before training starts); the
    tokenized plan is built on the first call and reused. With ``log_dir`` each call also writes
    ``log_dir/step-XXXXXX/TOFU_EVAL.json`` and ``TOFU_SUMMARY.json``.
    """
    _check_args(forget, ds_size, batch_size, max_new_tokens)
    retain_log_r = _retain_reference(retain_logs, forget, ds_size)
    from llm.data import load_split
    load_split(f"{forget}_perturbed", data_dir)  # fail early on a missing eval split
    cache: dict = {}

    def eval_fn(model, tokenizer, step: int, epoch) -> dict:
        if cache.get("tokenizer") is not tokenizer:
            cache.update(tokenizer=tokenizer, plan=EvalPlan(tokenizer, forget, data_dir, template, ds_size))
        result = _run(model, tokenizer, cache["plan"], retain_log_r, batch_size, max_new_tokens,
                      max_batch_tokens)
        if log_dir is not None:
            result["per_item"]["eval_info"].update(step=step, epoch=epoch)
            write_eval(Path(log_dir) / f"step-{int(step):06d}", result)
        return result["summary"]

    return eval_fn


def write_eval(out_dir, result: dict) -> tuple[Path, Path]:
    """Write TOFU_EVAL.json (per item) then TOFU_SUMMARY.json, each atomically."""
    from figures.io import write_json
    out_dir = Path(out_dir)
    write_json(out_dir / EVAL_FILE, result["per_item"])
    write_json(out_dir / SUMMARY_FILE, result["summary"])
    return out_dir / EVAL_FILE, out_dir / SUMMARY_FILE


# ---- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llm eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model to evaluate: checkpoint folder, preset name or hub id")
    src.add_argument("--from-logs", metavar="LOG",
                     help="recompute the summary from a per-item log (no model) and print JSON")
    p.add_argument("--forget", default="forget10", help="forget split: forget01, forget05, forget10")
    p.add_argument("--retain-logs", metavar="LOG", help="retain model's per-item log "
                   "(TOFU_EVAL.json, legacy eval_log_aggregated.json) for Forget Quality")
    p.add_argument("--out", metavar="DIR", help="write TOFU_EVAL.json and TOFU_SUMMARY.json here")
    p.add_argument("--data-dir", help="TOFU data folder; None means $TOFU_DATA_DIR")
    p.add_argument("--template", default="llama2", choices=["llama2", "qa", "chat"],
                   help="prompt template (tofu-notes 2)")
    p.add_argument("--ds-size", type=int, help="first N items of each eval set (300 = legacy TOFU; "
                   "None = all, as open-unlearning)")
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="scoring: rows x padded length per forward")
    p.add_argument("--max-new-tokens", type=int, default=200, help="greedy generation length cap")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1; None = cuda if available "
                   "(bf16 on GPU, fp32 on CPU)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    return p


def _print_table(summary: dict) -> None:
    keys = ["model_utility", "forget_quality", "forget_truth_ratio", "forget_Q_A_Prob",
            "forget_Q_A_ROUGE", *UTILITY_KEYS]
    for k in keys:
        v = summary.get(k)
        print(f"{k:<24} {'n/a (no --retain-logs)' if v is None else format(v, '.4g')}")


FQ_HINT = ("note: forget_quality is null without a retain model's log; pass --retain-logs "
           "RETAIN/TOFU_EVAL.json, made by `python -m llm finetune --split retainNN --out RETAIN` then "
           "`python -m llm eval --model RETAIN --forget forgetNN --out RETAIN` (the pipeline, "
           "`python -m llm pipeline`, makes and uses one for you)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from llm.data import DataError
    from llm.models import ModelError
    try:
        if args.from_logs:
            summary = summarize(args.from_logs, args.retain_logs, args.ds_size)
            print(json.dumps(summary, indent=2, sort_keys=True))
            if summary.get("forget_quality") is None:
                print(FQ_HINT, file=sys.stderr)
            return 0
        _check_args(args.forget, args.ds_size, args.batch_size, args.max_new_tokens)
        _retain_reference(args.retain_logs, args.forget, args.ds_size)  # fail before loading a model
        import torch

        from llm.models import load_model_and_tokenizer
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok = load_model_and_tokenizer(args.model, device=device, data_dir=args.data_dir)
        result = evaluate_model(model, tok, args.forget, args.data_dir, args.template,
                                args.retain_logs, args.ds_size, args.batch_size,
                                args.max_new_tokens, args.max_batch_tokens)
        result["per_item"]["eval_info"]["model"] = str(args.model)
        if args.out:
            write_eval(args.out, result)
        if args.json:
            print(json.dumps(result["summary"], indent=2, sort_keys=True))
        else:
            _print_table(result["summary"])
            if args.out:
                print(f"wrote {Path(args.out) / EVAL_FILE} and {Path(args.out) / SUMMARY_FILE}")
        if result["summary"].get("forget_quality") is None:
            print(FQ_HINT, file=sys.stderr)
        return 0
    except (EvalError, DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
