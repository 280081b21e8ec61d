"""Keep the best-Forget-Quality model of an unlearning run (the pipeline's ``--attacks``).

The attacks stage (llm/pipeline/run.py) attacks each run's final model and the model of its
evaluation with the highest Forget Quality. ``KeepBestFQ`` wraps the run's ``eval_fn``
(llm/pipeline/recording.py ``EvalRecorder``): after each evaluation it compares the Forget Quality
with the best so far and, only when it is strictly higher (ties go to the earliest epoch), saves
the model being trained as a Hugging Face folder ``dest``, written into a temporary folder and
renamed, so one copy is on disk at any time and a crash leaves either the previous best or the new
one. Step 0 (the initial evaluation) is the target model itself: when it stays the best nothing is
copied and ``best`` says ``"model": "target"``. The pipeline records ``best`` in the run log's
meta row as ``best_fq`` (llm/pipeline/stages.py ``unlearn_run``).

Processes: under DDP only rank 0 evaluates (llm/train/loop.py ``_evaluate``), on its whole copy of
the model, so rank 0 alone saves; FSDP evaluates the sharded model on every rank, which would need
a collective gather per improvement, so ``python -m llm pipeline`` refuses ``--attacks`` with
``--strategy fsdp`` (llm/pipeline/cli.py).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from llm.pipeline.environment import main_rank

__all__ = ["KeepBestFQ"]


class KeepBestFQ:
    """``eval_fn(model, tokenizer, step, epoch) -> summary`` that also keeps the best-FQ model.

    ``best``: {"step", "epoch", "forget_quality", "model": "target" (step 0) or "best_fq" (the
    folder ``dest``)}, or None while no evaluation has had a finite Forget Quality."""

    def __init__(self, eval_fn, dest: Path):
        self.eval_fn, self.dest = eval_fn, Path(dest)
        self.tmp = self.dest.with_name(f".{self.dest.name}.tmp")
        self.old = self.dest.with_name(f".{self.dest.name}.old")
        self.best: dict | None = None
        if main_rank():   # the only rank that evaluates, so the only one that writes here
            for stale in (self.dest, self.tmp, self.old):   # a previous attempt's copy is not this run's
                shutil.rmtree(stale, ignore_errors=True)

    def __call__(self, model, tokenizer, step: int, epoch: float) -> dict:
        summary = self.eval_fn(model, tokenizer, step, epoch)
        fq = summary.get("forget_quality")
        if fq is None or not math.isfinite(fq) or (self.best and fq <= self.best["forget_quality"]):
            return summary
        self.best = {"step": int(step), "epoch": float(epoch), "forget_quality": float(fq),
                     "model": "target" if step == 0 else self.dest.name}
        if step > 0 and main_rank():
            start = time.perf_counter()
            self._save(model, tokenizer)
            # the save is neither training nor evaluation: keep it out of the recorder's train time
            excluded = getattr(self.eval_fn, "exclude", None)
            if excluded is not None:
                excluded(time.perf_counter() - start)
        return summary

    def _save(self, model, tokenizer) -> None:
        """As llm/train/checkpoints.py ``save_final`` writes the final model (use_cache on in the
        saved config, the tokenizer beside it), then the rename."""
        from llm.models import save_tokenizer
        shutil.rmtree(self.tmp, ignore_errors=True)
        use_cache = model.config.use_cache
        model.config.use_cache = True
        try:
            model.save_pretrained(self.tmp, safe_serialization=True)
        finally:
            model.config.use_cache = use_cache   # training goes on with its own setting
        save_tokenizer(tokenizer, self.tmp)
        if self.dest.exists():
            os.replace(self.dest, self.old)
        os.replace(self.tmp, self.dest)
        shutil.rmtree(self.old, ignore_errors=True)
