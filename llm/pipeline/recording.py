"""What the pipeline records at each evaluation besides the evaluation summary (llm/evaluate/summary.py).

* ``ReferenceKL``: KL(initial || current) on fixed item sets (the forget set for Fig. 10, world
  facts for Fig. 2). The initial model's next-token log-probabilities at the answer positions are
  computed once and kept (on the CPU), so no second model stays in memory during unlearning. The
  value is the per-item mean over answer tokens of the full-vocabulary KL, averaged over items;
  the authors' code averages over every position including padding, which only rescales it.
* ``sample_answers``: greedy answers to a few fixed questions per set (Fig. 2 / Fig. 7 text).
* ``EvalRecorder``: the ``eval_fn`` handed to ``llm.train.unlearning.unlearn``; it calls the evaluator, adds
  KL, samples and timings, keeps the rows, and returns the summary as the trainer expects.
* ``TrainTimer``: the ``eval_fn`` handed to ``llm.train.loop.finetune``; it evaluates nothing and times
  the training alone (tokens/s, FLOPs per token for MFU).
"""
from __future__ import annotations

import time

import torch

from llm.data.formatting import collate, encode_prompt, encode_qa, pad_id
from theory.objectives import kl_categorical

#: Largest cached reference (number of answer-token rows x vocabulary) kept; beyond it the KL
#: sets are cut to fewer items (a 7B model's 32k vocabulary makes each row 64 kB in bf16).
MAX_CACHED_VALUES = 400_000_000


class ReferenceKL:
    """KL(initial || current) per answer token on fixed (question, answer) sets, initial cached."""

    def __init__(self, model, tokenizer, sets: dict[str, list[dict]], template: str,
                 batch_size: int = 32):
        self.batches: dict[str, list[dict]] = {}
        self.ref: dict[str, list[torch.Tensor]] = {}
        vocab = model.get_output_embeddings().weight.shape[0]
        budget = MAX_CACHED_VALUES
        for name, items in sets.items():
            encoded = [encode_qa(tokenizer, r["question"], r["answer"], template) for r in items]
            per_item = max(1, sum(len(e["input_ids"]) for e in encoded) // max(len(encoded), 1))
            keep = max(1, min(len(encoded), budget // (per_item * vocab * max(len(sets), 1))))
            encoded = encoded[:keep]
            pad = pad_id(tokenizer)
            self.batches[name] = [collate(encoded[i:i + batch_size], pad)
                                  for i in range(0, len(encoded), batch_size)]
            self.ref[name] = [lp.to("cpu") for lp in self._answer_logprobs(model, self.batches[name])]

    @staticmethod
    @torch.inference_mode()
    def _answer_logprobs(model, batches):
        """Per batch: [answer tokens, V] next-token log-probs (float32 on CPU for small models,
        the model dtype otherwise) plus the row index of each answer token."""
        device = next(model.parameters()).device
        out = []
        for b in batches:
            logits = model(input_ids=b["input_ids"].to(device),
                           attention_mask=b["attention_mask"].to(device)).logits[:, :-1]
            mask = (b["labels"][:, 1:] != -100).to(device)
            out.append(torch.log_softmax(logits[mask].float(), -1).to(logits.dtype))
        return out

    @torch.inference_mode()
    def __call__(self, model) -> dict[str, float]:
        result = {}
        for name, batches in self.batches.items():
            cur = self._answer_logprobs(model, batches)
            per_item = []
            for b, ref_lp, cur_lp in zip(batches, self.ref[name], cur):
                kl = kl_categorical(ref_lp.to(cur_lp.device).float(), cur_lp.float())   # [tokens]
                rows = (b["labels"][:, 1:] != -100).nonzero()[:, 0].to(kl.device)
                sums = torch.zeros(b["labels"].shape[0], device=kl.device).index_add_(0, rows, kl)
                counts = torch.bincount(rows, minlength=b["labels"].shape[0]).clamp(min=1)
                per_item.append(sums / counts)
            result[name] = float(torch.cat(per_item).mean())
        return result


def sample_answers(model, tokenizer, sets: dict[str, list[dict]], template: str,
                   max_new_tokens: int = 64) -> list[dict]:
    """Greedy answers to the given questions: [{"set", "question", "answer", "generated"}]."""
    from llm.evaluate.generation import greedy_generate
    flat = [(name, r) for name, rows in sets.items() for r in rows]
    if not flat:
        return []
    prompts = [encode_prompt(tokenizer, r["question"], template) for _, r in flat]
    texts = greedy_generate(model, tokenizer, prompts, batch_size=len(prompts),
                            max_new_tokens=max_new_tokens)
    return [{"set": name, "question": r["question"], "answer": r["answer"], "generated": t}
            for (name, r), t in zip(flat, texts)]


def _cuda_sync(model) -> bool:
    cuda = next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
    return cuda


class TrainTimer:
    """An ``eval_fn`` that evaluates nothing: it times the training between its first call (step
    0, after model loading and setup) and its last, and notes the model's size for FLOP counts."""

    def __init__(self):
        self.start = self.end = None
        self.steps = 0
        self.shape: dict = {}
        self.peak_bytes = 0

    def __call__(self, model, tokenizer, step: int, epoch: float) -> dict:
        cuda = _cuda_sync(model)
        now = time.perf_counter()
        if self.start is None:
            self.start = now
            self.shape = model_shape(model)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
        else:
            self.end, self.steps = now, step
            if cuda:
                self.peak_bytes = torch.cuda.max_memory_allocated()
        return {}

    def report(self, n_items: int, tokens: int, effective_batch: int) -> dict:
        """Training seconds, steps, tokens/s (real, unpadded tokens) and FLOPs per token."""
        seconds = (self.end or self.start or 0.0) - (self.start or 0.0)
        mean_len = tokens / max(n_items, 1)
        seen = self.steps * effective_batch * mean_len      # items seen x mean tokens per item
        return {"train_seconds": round(seconds, 3), "train_steps": self.steps,
                "train_tokens": int(seen), "tokens_per_s": seen / seconds if seconds > 0 else None,
                "mean_seq_len": mean_len, "flops_per_token": flops_per_token(self.shape, mean_len),
                "peak_train_bytes": self.peak_bytes, **self.shape}


def model_shape(model) -> dict:
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    return {"n_params": sum(p.numel() for p in model.parameters()), "n_embedding": emb,
            "n_layers": getattr(cfg, "num_hidden_layers", 0), "hidden": getattr(cfg, "hidden_size", 0)}


def flops_per_token(shape: dict, seq_len: float) -> float:
    """Training FLOPs per token: 6 x (parameters doing matmuls: all but the input embedding table)
    + 12 x layers x hidden x sequence length (attention scores and values, forward and backward)."""
    if not shape:
        return 0.0
    return 6.0 * (shape["n_params"] - shape["n_embedding"]) + 12.0 * shape["n_layers"] * shape["hidden"] * seq_len


class EvalRecorder:
    """The ``eval_fn(model, tokenizer, step, epoch) -> summary`` for one unlearning run.

    ``evaluate(model, tokenizer) -> summary`` is the configured llm.evaluate.scoring call; ``make_kl(model,
    tokenizer)`` builds the ReferenceKL, at step 0 when the model is still the initial one;
    ``sample_sets`` are the questions whose answers are stored. ``initial_row`` (the target's
    evaluation, identical for every run of a task) is reused as step 0 instead of recomputing it.
    Rows accumulate in ``self.rows`` in the result-log schema (llm/pipeline/run.py).

    Timing: training time is the wall time between evaluations (so setup and evaluation are
    excluded); on CUDA the peak memory since the previous evaluation is read on entry and the
    peak reset on exit, so evaluation memory never counts as training memory.
    """

    def __init__(self, evaluate, make_kl, sample_sets, template: str, sample_tokens: int = 48,
                 n_eval_items: int = 0, initial_row: dict | None = None):
        self.evaluate, self.make_kl, self.sample_sets = evaluate, make_kl, sample_sets
        self.template, self.sample_tokens, self.n_eval_items = template, sample_tokens, n_eval_items
        self.initial_row = initial_row
        self.kl = None
        self.rows: list[dict] = []
        self.eval_seconds = self.train_seconds = 0.0
        self.train_steps = 0
        self.train_peak_bytes = 0
        self._last = None            # (time, step) at the end of the previous evaluation

    def __call__(self, model, tokenizer, step: int, epoch: float) -> dict:
        cuda = _cuda_sync(model)
        start = time.perf_counter()
        if self._last is not None:
            self.train_seconds += start - self._last[0]
            self.train_steps += step - self._last[1]
            if cuda:
                self.train_peak_bytes = max(self.train_peak_bytes, torch.cuda.max_memory_allocated())
        was_training = model.training
        model.eval()
        if self.kl is None and self.make_kl is not None:
            self.kl = self.make_kl(model, tokenizer)
        if step == 0 and self.initial_row is not None:
            row = dict(self.initial_row)
        else:
            summary = dict(self.evaluate(model, tokenizer))
            kl = self.kl(model) if self.kl is not None else {}
            samples = sample_answers(model, tokenizer, self.sample_sets, self.template, self.sample_tokens)
            _cuda_sync(model)
            seconds = time.perf_counter() - start
            self.eval_seconds += seconds
            row = {"event": "eval", "step": int(step), "epoch": float(epoch), "summary": summary,
                   "kl": kl, "samples": samples, "eval_seconds": round(seconds, 3),
                   "eval_items": self.n_eval_items}
        model.train(was_training)
        self.rows.append(row)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._last = (time.perf_counter(), step)
        return row["summary"]

    def exclude(self, seconds: float) -> None:
        """Time spent after an evaluation on neither training nor evaluating (llm/pipeline/best_fq.py
        saving a model) is not training time: the next interval starts that much later."""
        if self._last is not None:
            self._last = (self._last[0] + seconds, self._last[1])

    def timing(self) -> dict:
        evals = [r for r in self.rows if r["step"] > 0]
        items = sum(r.get("eval_items", 0) for r in evals)
        return {"train_seconds": round(self.train_seconds, 3), "train_steps": self.train_steps,
                "eval_seconds": round(self.eval_seconds, 3),
                "eval_items_per_s": items / self.eval_seconds if self.eval_seconds > 0 else None,
                "peak_train_bytes": self.train_peak_bytes}
