"""Scoring a model on the TOFU eval sets: answer losses, greedy generations, the summary.

``evaluate_model`` scores a model once -> {"summary", "per_item"}; ``make_eval_fn`` is the
trainer's every-k-steps callback ``eval_fn(model, tokenizer, step, epoch) -> summary``. Eval sets
(tofu-notes 3.1): forgetXX_perturbed, retain_perturbed, real_authors_perturbed,
world_facts_perturbed; ``ds_size=300`` keeps the first 300 items of each, as legacy TOFU did
(default: all items, as open-unlearning). ``EvalItems`` tokenizes every unique QA pair and prompt
once and keeps each distinct token sequence once; ``score_sequences`` (llm/evaluate/forward.py) runs
each distinct question prefix once and its answers from its KV cache, in length-sorted, dynamically
padded batches under a token budget, projecting onto the vocabulary only at the answer positions.

``metric_set`` (``--metrics``: "paper", "ou", "all"; llm/evaluate/summary.py lists the keys each
adds) and ``numerics`` ("exact", "ou"; llm/evaluate/metrics.py) choose what is computed and how; ``mia_k``
is the Min-K% / Min-K%++ fraction (open-unlearning: 0.4). With ``ou`` or ``all`` the forget split's QA pairs and TOFU's
holdout set of the same size (``holdout01/05/10``) are scored too, for the MIA scores and
extraction strength (llm/evaluate/membership.py): the forget pairs are already eval items, so their MIA
statistics come from the same forward as their losses; with ``all`` the generations are also scored against
the paraphrased and the perturbed answers.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from llm.evaluate import membership as eval_mia, metrics, mia
from llm.evaluate.forward import MAX_PADDING, answer_losses, length_batches, score_sequences
from llm.evaluate.logs import render_log, retain_reference, write_eval
from llm.evaluate.summary import EVAL_SETS, EvalError, check_metrics, check_numerics, summary_from_records

__all__ = ["EvalItems", "MAX_PADDING", "length_batches", "score_sequences", "answer_losses", "evaluate_model", "make_eval_fn",
           "check_args", "check_flags", "check_data", "check_forget", "check_retain"]

_FORGET_RE = re.compile(r"^forget(\d\d)$")


def check_forget(forget: str) -> None:
    if not _FORGET_RE.match(str(forget)) or not 1 <= int(forget[-2:]) <= 99:
        raise EvalError(f"unknown forget split {forget!r}; use forget01, forget05 or forget10 "
                        f"(the splits TOFU ships perturbed answers for)")


class EvalItems:
    """Eval items of every task, tokenized once (unique QA pairs and prompts) for one tokenizer."""

    def __init__(self, tokenizer, forget: str, data_dir, template: str, ds_size: int | None,
                 which: str = "paper", tasks=tuple(EVAL_SETS)):
        from llm.data.tofu import load_split
        from llm.data.formatting import encode_prompt, encode_qa, format_prompt

        check_forget(forget)
        self.forget, self.template, self.ds_size, self.which = forget, template, ds_size, which
        # Every distinct sequence (by token ids) is scored once: the forget split's QA pairs are
        # both eval items and MIA members, and two tasks may share a (question, answer) pair.
        self.encoded: list[dict] = []
        seen: dict[tuple, int] = {}

        def index(enc: dict) -> int:
            key = (tuple(enc["input_ids"]), tuple(enc["labels"]))
            if key not in seen:
                seen[key] = len(self.encoded)
                self.encoded.append(enc)
            return seen[key]

        #: MIA set ("forget" members, "holdout" non-members) -> indices into self.encoded
        self.mia_index: dict[str, list[int]] = {}
        if check_metrics(which) != "paper":
            for name, split in (("forget", forget), ("holdout", _holdout(forget))):
                rows = load_split(split, data_dir)
                self.mia_index[name] = [index(e) for e in eval_mia.encode_mia_items(tokenizer, rows, template)]
        self.items: dict[str, list[dict]] = {}
        for task in tasks:  # a subset (relearning scores only "forget") skips the others' work
            split = EVAL_SETS[task][0]
            rows = load_split(split or f"{forget}_perturbed", data_dir)
            self.items[task] = rows[:ds_size] if ds_size else rows
        pairs: dict[tuple[str, str], int] = {}
        questions: dict[str, int] = {}
        for task, rows in self.items.items():
            for row in rows:
                answers = [row["answer"], *row["perturbed_answer"]]
                if EVAL_SETS[task][1]:
                    answers.append(row["paraphrased_answer"])
                for a in answers:
                    if (row["question"], a) not in pairs:
                        pairs[(row["question"], a)] = index(encode_qa(tokenizer, row["question"], a, template))
                questions.setdefault(row["question"], len(questions))
        self.pair_index, self.question_index = pairs, questions
        #: sequences whose per-token MIA statistics are needed besides their loss
        self.detail = sorted({i for idx in self.mia_index.values() for i in idx})
        self.prompts = [encode_prompt(tokenizer, q, template) for q in questions]
        self.prompt_texts = {q: format_prompt(tokenizer, q, template) for q in questions}

    def info(self) -> dict:
        info = {"forget_split": self.forget, "ds_size": self.ds_size, "template": self.template,
                "metrics": self.which, "n_items": {t: len(r) for t, r in self.items.items()}}
        if self.mia_index:
            info["holdout_split"] = _holdout(self.forget)
        return info

    def records(self, losses: np.ndarray, generations: list[str] | None) -> dict:
        records = {}
        for task, rows in self.items.items():
            rec = {}
            for i, row in enumerate(rows):
                q = row["question"]
                item = {"gt": float(losses[self.pair_index[(q, row["answer"])]]),
                        "pert": [float(losses[self.pair_index[(q, a)]]) for a in row["perturbed_answer"]]}
                if EVAL_SETS[task][1]:
                    item["para"] = float(losses[self.pair_index[(q, row["paraphrased_answer"])]])
                if generations is not None:
                    gen = generations[self.question_index[q]]
                    item["rouge"] = self._rouge(q, row["answer"], gen)
                    if self.which == "all" and task == "forget":  # open-unlearning's PARA/PERT_ROUGE
                        item["rouge_para"] = self._rouge(q, row["paraphrased_answer"], gen)
                        pert = [self._rouge(q, a, gen) for a in row["perturbed_answer"]]
                        item["rouge_pert"] = {k: [p[k] for p in pert] for k in pert[0]}
                rec[str(i)] = item
            records[task] = rec
        return records


    def _rouge(self, question: str, ground_truth: str, generation: str) -> dict:
        return {**metrics.rouge_scores(ground_truth, generation), "input": self.prompt_texts[question],
                "ground_truth": ground_truth, "generation": generation}


def _holdout(forget: str) -> str:
    try:
        return eval_mia.holdout_split(forget)
    except ValueError as e:
        raise EvalError(str(e)) from None


def _run(model, tokenizer, plan: EvalItems, retain_ref, batch_size: int, max_new_tokens: int,
         max_batch_tokens: int, numerics: str = "exact", mia_k: float = mia.DEFAULT_K,
         bf16_scoring: bool = False) -> dict:
    from llm.data.formatting import pad_id
    from llm.evaluate.generation import greedy_generate

    was_training = model.training
    model.eval()
    try:
        pad = pad_id(tokenizer)
        losses, details = score_sequences(model, plan.encoded, pad, max_batch_tokens, plan.detail,
                                          functools.partial(eval_mia.row_stats, tokenizer), bf16_scoring)
        generations = greedy_generate(model, tokenizer, plan.prompts, batch_size, max_new_tokens)
        stats = {name: [{"avg_loss": float(losses[i]), **details[i]} for i in idx]
                 for name, idx in plan.mia_index.items()}
    finally:
        model.train(was_training)
    records = plan.records(losses, generations)
    mia_scores = extraction = None
    if stats:
        per_set = {name: eval_mia.attack_scores(s, mia_k, numerics) for name, s in stats.items()}
        mia_scores = {a: {name: per_set[name][a] for name in per_set} for a in mia.ATTACKS}
        extraction = [metrics.extraction_strength(s["match"]) for s in stats["forget"]]
    summary = summary_from_records(records, retain_ref, numerics, plan.which, mia_scores, extraction,
                                   mia_k)
    info = {**plan.info(), "numerics": numerics, **({"mia_k": mia_k} if stats else {})}
    per_item = render_log(records, summary, info, numerics)
    if stats:
        per_item.update(eval_mia.render_mia(per_set, stats["forget"]))
    return {"summary": summary, "per_item": per_item}


def evaluate_model(model, tokenizer, forget: str, data_dir=None, template: str = "llama2",
                   retain_logs=None, ds_size: int | None = None, batch_size: int = 32,
                   max_new_tokens: int = 200, max_batch_tokens: int = 16384, metric_set: str = "paper",
                   numerics: str = "exact", mia_k: float = mia.DEFAULT_K,
                   bf16_scoring: bool = False) -> dict:
    """Score ``model`` on the TOFU eval sets: {"summary": {...}, "per_item": TOFU_EVAL.json layout}.

    retain_logs: path or loaded per-item log of the retain model (for Forget Quality; with
    ``metric_set`` ou/all also for privleak, from its per-item mia_min_k scores), or None.
    bf16_scoring: teacher-forced scoring under bf16 autocast (output head and log-softmax stay
    float32; generation stays in the model's dtype): ~1.8x faster scoring on a CPU with AVX-512
    BF16, answer losses within ~0.5 % (docs/results.md gives the measured summary differences).
    """
    check_args(forget, ds_size, batch_size, max_new_tokens, metric_set, numerics, mia_k)
    retain_ref = check_retain(retain_logs, forget, ds_size, metric_set, mia_k)
    plan = EvalItems(tokenizer, forget, data_dir, template, ds_size, metric_set)
    return _run(model, tokenizer, plan, retain_ref, batch_size, max_new_tokens, max_batch_tokens,
                numerics, mia_k, bf16_scoring)


def check_retain(retain_logs, forget: str, ds_size, which: str = "paper",
                 mia_k: float = mia.DEFAULT_K):
    """The retain reference, checked up front: privleak needs its per-item mia_min_k scores,
    made with the same k."""
    ref = retain_reference(retain_logs, forget, ds_size)
    if ref is not None and which != "paper":
        if "min_k" not in (ref["mia"] or {}):
            raise EvalError(f"{ref['name']} has no per-item mia_min_k scores for privleak; evaluate "
                            f"the retain model with --metrics ou or all (or use --metrics paper)")
        try:
            eval_mia.check_same_k(mia_k, ref["mia_k"], ref["name"])
        except ValueError as e:
            raise EvalError(str(e)) from None
    return ref


def check_flags(which: str = "paper", numerics: str = "exact", mia_k: float = mia.DEFAULT_K) -> None:
    """--metrics, --numerics and --mia-k: one-line EvalErrors naming the accepted values."""
    check_metrics(which)
    check_numerics(numerics)
    try:
        mia.check_k(mia_k)
    except ValueError as e:
        raise EvalError(str(e)) from None


def check_args(forget, ds_size, batch_size, max_new_tokens, which: str = "paper",
               numerics: str = "exact", mia_k: float = mia.DEFAULT_K) -> None:
    check_forget(forget)
    check_flags(which, numerics, mia_k)
    if ds_size is not None and ds_size < 1:
        raise EvalError(f"--ds-size must be >= 1, got {ds_size}")
    if batch_size < 1 or max_new_tokens < 1:
        raise EvalError("--batch-size and --max-new-tokens must be >= 1")
    if which != "paper":
        _holdout(forget)


def check_data(forget: str, data_dir, metric_set: str = "paper") -> None:
    """Fail before any model is loaded if the forget split's eval set, or (ou/all) its holdout
    set, is missing: one-line DataError naming the file."""
    from llm.data.tofu import load_split
    load_split(f"{forget}_perturbed", data_dir)
    if metric_set != "paper":
        load_split(_holdout(forget), data_dir)


def make_eval_fn(forget: str, data_dir=None, template: str = "llama2", retain_logs=None,
                 ds_size: int | None = None, batch_size: int = 32, max_new_tokens: int = 200,
                 max_batch_tokens: int = 16384, log_dir=None, metric_set: str = "paper",
                 numerics: str = "exact", mia_k: float = mia.DEFAULT_K, bf16_scoring: bool = False):
    """The trainer's callback ``eval_fn(model, tokenizer, step, epoch) -> summary``.

    Data and the retain reference are loaded now (errors surface before training starts); the
    tokenized plan is built on the first call and reused. With ``log_dir`` each call also writes
    ``log_dir/step-XXXXXX/TOFU_EVAL.json`` and ``TOFU_SUMMARY.json``.
    """
    check_args(forget, ds_size, batch_size, max_new_tokens, metric_set, numerics, mia_k)
    retain_ref = check_retain(retain_logs, forget, ds_size, metric_set, mia_k)
    check_data(forget, data_dir, metric_set)
    cache: dict = {}

    def eval_fn(model, tokenizer, step: int, epoch) -> dict:
        if cache.get("tokenizer") is not tokenizer:
            cache.update(tokenizer=tokenizer, plan=EvalItems(tokenizer, forget, data_dir, template,
                                                            ds_size, metric_set))
        result = _run(model, tokenizer, cache["plan"], retain_ref, batch_size, max_new_tokens,
                      max_batch_tokens, numerics, mia_k, bf16_scoring)
        if log_dir is not None:
            result["per_item"]["eval_info"].update(step=step, epoch=epoch)
            write_eval(Path(log_dir) / f"step-{int(step):06d}", result)
        return result["summary"]

    return eval_fn
