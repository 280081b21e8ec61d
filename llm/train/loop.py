"""Fine-tuning (target / retain models) and unlearning (GA, NPO, NPO+RT, DPO, ...) on TOFU.

    python -m llm finetune --model tiny --max-examples 200 \\
        --epochs 20 --lr 3e-3 --batch-size 8 --effective-batch 8 --out runs/target
    python -m llm unlearn --model runs/target --forget forget01 \\
        --method npo_rt --max-examples 160 --lr 1e-3 --batch-size 8 --effective-batch 8 \\
        --out runs/npo_rt
    torchrun --nproc-per-node 2 -m llm unlearn ...      # data parallel (gloo on CPU, NCCL on GPU)
    torchrun --nproc-per-node 2 -m llm unlearn ... --strategy fsdp   # FSDP2: model sharded

Writes ``--out`` atomically (the run lives in ``<out>.partial`` until it finishes): the model
(safetensors + config + tokenizer, loadable with ``--model <out>``), ``train_config.json`` (the
resolved config) and ``log.jsonl`` (one row per optimizer step: step, epoch, lr, loss,
forget_loss, retain_loss, grad_norm; plus {"event": "eval", ...} rows from ``eval_fn``).
``--resume`` continues ``<out>.partial`` only with the settings it was started with (it names each
one that differs; llm.train.config.RESUME_FREE lists those that may); a kill, a crash or Ctrl-C at any
instant leaves a finished ``<out>`` or a ``<out>.partial`` that ``--resume`` or ``--overwrite``
takes (llm/train/checkpoints.py describes the folder's lifecycle).

Defaults are the paper's recipe (tofu-notes 4): AdamW lr 1e-5, weight decay 0.01, effective batch
32 = batch_size x grad_accum x processes, linear warm-up over the first epoch then linear decay
(transformers.get_linear_schedule_with_warmup), gradient clipping at 1.0 (HF Trainer's default),
5 epochs to fine-tune and 10 to unlearn, bf16 autocast on GPU and fp32 on CPU.

This module is the loop and fine-tuning; what unlearning adds (the method from llm/train/methods/, its
data, the reference, the inputs of a micro-batch) is an ``Objective`` built in llm/train/unlearning.py
(``unlearn``), and the command lines are llm/train/cli.py. So fine-tuning imports neither the
unlearning methods nor the evaluation code, and the code hash of a fine-tune (a pipeline's target
and retain stages, infra/codehash.py) does not change when they do (tests/test_layers.py).

Data order is a pure function of (seed, step) (llm/data/order.py), so --resume needs no data-loader
state; --strategy fsdp's path through the run is described in llm/train/distributed.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from llm.train import checkpoints, distributed, model_setup
from llm.train.checkpoints import unwrap
from llm.train.config import ConfigError, TrainConfig, autocast_for, parser, precision_for, resolve, resume_view
from llm.data.tofu import DataError, load_split
from llm.data.order import DataOrder, fit_batch_to_data, make_order
from llm.data.formatting import collate, encode_qa, eos_id
from llm.models import (ModelError, check_device, label_positions, load_model_and_tokenizer, logits_at,
                        lora_targets, row_sums, token_counts, token_mean_logp)

__all__ = ["TrainConfig", "ConfigError", "TrainingStopped", "Objective", "finetune", "micro_losses",
           "forward", "prepare_run", "fit", "schedule", "DataOrder", "parser", "USER_ERRORS"]

USER_ERRORS = (ConfigError, DataError, ModelError)
EvalFn = Callable[..., dict]


@dataclass(frozen=True)
class Objective:
    """What a training mode other than fine-tuning adds to the loop (llm/train/unlearning.py builds
    unlearning's): passed in, so that this module never imports the objectives themselves."""
    methods: dict                             # --method's choices: {name: one line for --help}
    resolve: Callable                         # (cfg) -> cfg with the method's hparams; ConfigError
    needs: Callable                           # (method) -> the inputs it reads (llm.train.methods.base.NEEDS)
    prepare: Callable                         # (run, training rows): its data, run.plan, sharding, reference
    micro_losses: Callable                    # (run, model, items) -> {"loss", "forget_loss", "retain_loss"}


# ---- loading -------------------------------------------------------------------------------------

def _rows(name: str, cfg: TrainConfig) -> list[dict]:
    rows = load_split(name, cfg.data_dir)
    return rows[-cfg.max_examples:] if cfg.max_examples else rows


def _encode(tok, rows, cfg: TrainConfig, answer_key="answer") -> list[dict]:
    return [encode_qa(tok, r["question"], r[answer_key], cfg.template, cfg.max_length) for r in rows]


@dataclass
class Run:
    """Everything a training loop, a test or the benchmark needs, built before anything is written."""
    cfg: TrainConfig
    mode: str
    dist: distributed.Dist
    model: torch.nn.Module
    tokenizer: object
    plan: DataOrder
    train: list[dict]                      # encoded training (forget) sequences
    retain: list[dict] = dataclasses.field(default_factory=list)
    idk: dict = dataclasses.field(default_factory=dict)        # (item, idk) -> encoded
    ref: dict | None = None                # cached reference values (llm/train/unlearning.py)
    ref_model: torch.nn.Module | None = None
    fingerprint: str | None = None          # weights' cache key, taken before FSDP sharding
    live_reference: bool = False
    precision: str = "fp32"
    objective: Objective | None = None       # None: fine-tuning (NLL of the training answers)
    need: frozenset = frozenset()            # the objective's inputs (objective.needs(method))

    @property
    def sharded(self) -> bool:
        return self.cfg.strategy == "fsdp"

    @property
    def autocast(self):
        if self.sharded:  # FSDP's MixedPrecisionPolicy casts the gathered weights itself
            return contextlib.nullcontext
        return autocast_for(self.precision, self.dist.device)


def prepare_run(cfg: TrainConfig, mode: str, dist: distributed.Dist | None = None,
                objective: Objective | None = None) -> Run:
    """Validate, load data and model, encode, plan, and build the reference (cache or live).
    ``objective``: unlearning's (llm.train.unlearning.prepare_run passes it); None fine-tunes."""
    if (objective is None) != (mode == "finetune"):
        raise ValueError(f"mode {mode!r} with objective {objective!r}: unlearn through llm.train.unlearning")
    dist = dist or distributed.Dist()
    cfg = resolve(cfg, mode, dist.world)
    if objective is not None:
        cfg = objective.resolve(cfg)
    model, tok = load_model_and_tokenizer(cfg.model, device=dist.device,
                                          dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float32,
                                          data_dir=cfg.data_dir, seed=cfg.seed)
    eos_id(tok)
    if cfg.lora:
        lora_targets(model, cfg.lora_targets)
    need = objective.needs(cfg.method) if objective is not None else frozenset()
    precision = precision_for(cfg, dist.device)
    if cfg.cpu_offload and dist.device.type != "cuda":
        raise ConfigError("--cpu-offload only applies to GPU training; drop it on CPU")
    train_rows = _rows(cfg.split if mode == "finetune" else cfg.forget, cfg)
    if not train_rows:
        raise DataError(f"the {'training' if mode == 'finetune' else 'forget'} set is empty; "
                        f"check --max-examples and the split")
    cfg = fit_batch_to_data(cfg, len(train_rows), dist)
    run = Run(cfg, mode, dist, model, tok, None, _encode(tok, train_rows, cfg), precision=precision,
              objective=objective, need=need)
    if objective is not None:
        objective.prepare(run, train_rows)
        return run
    run.plan = make_order(cfg, len(train_rows), 0, 0, [len(e["input_ids"]) for e in run.train], [])
    if run.sharded:
        model_setup.shard_model(run)
    return run


# ---- one micro-batch ----------------------------------------------------------------------------

def micro_losses(run: Run, model, items) -> dict[str, torch.Tensor]:
    """Loss parts of one micro-batch ``items`` = [(item, retain, idk, epoch), ...] (one forward):
    the objective's, or fine-tuning's token-mean NLL of the training answers."""
    if run.objective is not None:
        return run.objective.micro_losses(run, model, items)
    batch, answer, _, _, nll = forward(run, model, [run.train[i] for i, _, _, _ in items])
    from theory.objectives import nll_loss
    loss = nll_loss(token_mean_logp(row_sums(-nll, answer), token_counts(batch["labels"])))
    return {"loss": loss, "forget_loss": loss.detach(), "retain_loss": torch.zeros(())}


def forward(run: Run, model, rows: list[dict], extra=None):
    """One forward over ``rows``, projecting onto the vocabulary only where it is used: the answer
    positions, and where ``extra(batch)`` [B, T] is True (a KL term: the retain rows' real
    positions; llm.models.logits_at). Returns (batch, answer [B, T], keep [B, T], logits [N, V] at
    keep, nll [answer positions] in float32)."""
    batch = {k: v.to(run.dist.device) for k, v in collate(rows, run.tokenizer.pad_token_id).items()}
    answer = label_positions(batch["labels"])
    keep = answer.clone()
    if extra is not None:
        keep |= extra(batch)
    with run.autocast():
        logits = logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
    nll = torch.nn.functional.cross_entropy(logits[answer[keep]].float(),
                                            batch["labels"][:, 1:][answer[:, :-1]], reduction="none")
    return batch, answer, keep, logits, nll


# ---- the loop -----------------------------------------------------------------------------------

class TrainingStopped(RuntimeError):
    """Training stopped part-way (a non-finite loss, an error in a step); one line saying what the
    interrupted run's folder allows (--resume from its checkpoint, or --overwrite)."""


def _train(cfg: TrainConfig, mode: str, eval_fn: EvalFn | None = None,
           objective: Objective | None = None) -> Path:
    check_device(cfg.device)
    dist = distributed.setup(cfg.device, group=(cfg.strategy or distributed.default_strategy()) == "fsdp")
    try:
        cfg = resolve(cfg, mode, dist.world)
        out = Path(cfg.out)
        work = checkpoints.work_dir(out)
        settings = resume_view(objective.resolve(cfg) if objective else cfg, mode, dist.world, dist.device)
        checkpoints.check_folders(out, cfg.resume, cfg.overwrite, settings)
        distributed.barrier(dist)  # every rank checked before anyone creates the folder
        if cfg.resume and (work / checkpoints.FINISHED).exists():  # killed while finishing
            if dist.main:
                checkpoints.finish(out)
            distributed.barrier(dist)
            return out
        run = prepare_run(cfg, mode, dist, objective)
        if not cfg.resume and dist.main:
            checkpoints.start(out, settings)
        distributed.barrier(dist)
        try:
            last = fit(run, work, eval_fn, resume=cfg.resume)
        except USER_ERRORS:
            raise
        except Exception as e:  # a non-finite loss, out of memory, ... (Ctrl-C: the CLI says it)
            text = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise TrainingStopped(f"training stopped: {text}; {work} keeps the run: "
                                  f"{checkpoints.status(work)}") from e
        if last < run.plan.steps:  # stopped early on purpose: leave the .partial to resume
            return work
        plain = checkpoints.full_model(run) if run.sharded else None
        if dist.main:
            checkpoints.save_final(run, work, plain)
            checkpoints.finish(out)
        distributed.barrier(dist)
        return out
    finally:
        distributed.teardown(dist)


def fit(run: Run, work: Path | None = None, eval_fn: EvalFn | None = None, resume: bool = False) -> int:
    """Train ``run.model`` in place for ``run.plan.steps`` steps (or until ``stop_after``); returns
    the number of steps done. ``work`` (optional) receives log.jsonl and checkpoints."""
    cfg, dist = run.cfg, run.dist
    model = model_setup.prepare_model(run)
    if run.sharded:  # the reference pass left FSDP's root gathered: collect the shards, not the gather
        distributed.reshard(model)
    params = list(checkpoints.trainable(model).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = schedule(optimizer, run.plan)
    start, log_path = 0, (work / "log.jsonl" if work is not None else None)
    if resume:
        start = checkpoints.load(run, checkpoints.latest(work), model, optimizer, scheduler)
        if dist.main:  # drop log rows past the checkpoint
            checkpoints.truncate_log(log_path, start)
    elif work is not None and dist.main:
        work.mkdir(parents=True, exist_ok=True)
    distributed.barrier(dist)
    return _loop(run, model, optimizer, scheduler, params, start, work, log_path, eval_fn)


def schedule(optimizer, plan: DataOrder):
    """Linear warm-up over ``plan.warmup`` steps, then linear decay to 0 at ``plan.steps`` (HF's)."""
    from transformers import get_linear_schedule_with_warmup
    return get_linear_schedule_with_warmup(optimizer, plan.warmup, plan.steps)


def _loop(run, model, optimizer, scheduler, params, start, work, log_path, eval_fn) -> int:
    from tqdm.auto import tqdm
    cfg, dist, plan = run.cfg, run.dist, run.plan
    bar = tqdm(total=plan.steps, initial=start, desc=run.mode, disable=None if dist.main else True)
    log = open(log_path, "a") if dist.main and log_path is not None else None
    step = start
    try:
        if eval_fn and cfg.eval_every and start == 0:
            _evaluate(run, model, eval_fn, 0, log)
        for step in range(start, plan.steps):
            if cfg.stop_after is not None and step >= cfg.stop_after:
                return step
            lr = scheduler.get_last_lr()[0]
            sums = {"loss": 0.0, "forget_loss": 0.0, "retain_loss": 0.0}
            micro = plan.items(step, dist.rank, dist.world, cfg.batch_size, cfg.grad_accum)
            for m, items in enumerate(micro):
                sync = m == len(micro) - 1 or dist.world == 1
                if run.sharded:  # reduce-scatter the gradients once, after the last micro-batch
                    model.set_requires_gradient_sync(sync)
                ctx = contextlib.nullcontext() if sync or run.sharded else model.no_sync()
                with ctx:
                    parts = micro_losses(run, model, items)
                    (parts["loss"] / cfg.grad_accum).backward()
                for k in sums:
                    sums[k] += float(parts[k].detach()) / cfg.grad_accum
            grad_norm = distributed.clip_grad_norm(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss, forget_loss, retain_loss = distributed.all_mean(list(sums.values()), dist)
            row = {"step": step + 1, "epoch": round((step + 1) * plan.effective_batch / plan.n, 4),
                   "lr": lr, "loss": loss, "forget_loss": forget_loss, "retain_loss": retain_loss,
                   "grad_norm": grad_norm}
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss} at step {step + 1} (lower --lr, or "
                                         f"clip with --max-grad-norm)")
            # evaluate before checkpointing: a checkpoint at step s then holds every row up to s
            if eval_fn and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == plan.steps):
                _evaluate(run, model, eval_fn, step + 1, log)
            if work is not None and cfg.save_every and (step + 1) % cfg.save_every == 0 \
                    and step + 1 < plan.steps:
                checkpoints.save(run, work, step + 1, model, optimizer, scheduler)
        return plan.steps
    finally:
        bar.close()
        if log:
            log.close()


def _evaluate(run, model, eval_fn, step, log) -> None:
    """ddp: rank 0 evaluates its copy. fsdp: every rank runs ``eval_fn`` on the sharded model in
    lockstep (same inputs, same gathered weights, hence the same forward calls), rank 0 logs."""
    if run.dist.main or run.sharded:
        inner, epoch = unwrap(model), round(step * run.plan.effective_batch / run.plan.n, 4)
        was = inner.training
        inner.eval()
        summary = eval_fn(inner, run.tokenizer, step, epoch)
        inner.train(was)
        if log is not None and run.dist.main:
            log.write(json.dumps({"event": "eval", "step": step, "epoch": epoch, "summary": summary},
                                 default=float) + "\n")
            log.flush()
    distributed.barrier(run.dist)


def finetune(config: TrainConfig, eval_fn: EvalFn | None = None) -> Path:
    """Fine-tune ``config.model`` on ``config.split``; returns the output folder."""
    return _train(config, "finetune", eval_fn)
