"""Scoring a model on the TOFU eval sets: answer losses, greedy generations, the summary.

``evaluate_model`` scores a model once -> {"summary", "per_item"}; ``make_eval_fn`` is the
trainer's every-k-steps callback ``eval_fn(model, tokenizer, step, epoch) -> summary``. Eval sets
(tofu-notes 3.1): forgetXX_perturbed, retain_perturbed, real_authors_perturbed,
world_facts_perturbed; ``ds_size=300`` keeps the first 300 items of each, as legacy TOFU did
(default: all items, as open-unlearning). ``EvalPlan`` tokenizes every unique QA pair and prompt
once; ``answer_losses`` scores them in length-sorted, dynamically padded batches.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from llm import metrics
from llm.eval_logs import render_log, retain_reference, write_eval
from llm.eval_summary import TASKS, EvalError, summary_from_records

__all__ = ["EvalPlan", "MAX_PADDING", "answer_losses", "evaluate_model", "make_eval_fn",
           "check_args", "check_forget"]

_FORGET_RE = re.compile(r"^forget(\d\d)$")
#: scoring batches hold rows at least (1 - MAX_PADDING) x as long as their longest row
MAX_PADDING = 0.1


def check_forget(forget: str) -> None:
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

        check_forget(forget)
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
    summary = summary_from_records(records, retain_log_r)
    return {"summary": summary, "per_item": render_log(records, summary, plan.info())}


def evaluate_model(model, tokenizer, forget: str, data_dir=None, template: str = "llama2",
                   retain_logs=None, ds_size: int | None = None, batch_size: int = 32,
                   max_new_tokens: int = 200, max_batch_tokens: int = 16384) -> dict:
    """Score ``model`` on the TOFU eval sets: {"summary": {...}, "per_item": TOFU_EVAL.json layout}.

    retain_logs: path or loaded per-item log of the retain model (for Forget Quality), or None.
    """
    check_args(forget, ds_size, batch_size, max_new_tokens)
    retain_log_r = retain_reference(retain_logs, forget, ds_size)
    plan = EvalPlan(tokenizer, forget, data_dir, template, ds_size)
    return _run(model, tokenizer, plan, retain_log_r, batch_size, max_new_tokens, max_batch_tokens)


def check_args(forget, ds_size, batch_size, max_new_tokens) -> None:
    check_forget(forget)
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
    check_args(forget, ds_size, batch_size, max_new_tokens)
    retain_log_r = retain_reference(retain_logs, forget, ds_size)
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
