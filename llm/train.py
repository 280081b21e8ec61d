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
one that differs; llm.config.RESUME_FREE lists those that may); a kill, a crash or Ctrl-C at any
instant leaves a finished ``<out>`` or a ``<out>.partial`` that ``--resume`` or ``--overwrite``
takes (llm/checkpoints.py describes the folder's lifecycle).

Defaults are the paper's recipe (tofu-notes 4): AdamW lr 1e-5, weight decay 0.01, effective batch
32 = batch_size x grad_accum x processes, linear warm-up over the first epoch then linear decay
(transformers.get_linear_schedule_with_warmup), gradient clipping at 1.0 (HF Trainer's default),
5 epochs to fine-tune and 10 to unlearn, bf16 autocast on GPU and fp32 on CPU.

This module is the loop and fine-tuning; what unlearning adds (the method's defaults, its loss
from llm/losses.py, the live reference) is an ``Objective`` built in llm/unlearning.py
(``unlearn``), and the command lines are llm/train_cli.py. So fine-tuning imports neither the
unlearning losses nor the evaluation code, and the code hash of a fine-tune (a pipeline's target
and retain stages, infra/codehash.py) does not change when they do.

Data order is a pure function of (seed, step): epoch e visits the training (forget) set in a
seeded permutation; each forget item draws its retain / IDK partner from a generator seeded by
(seed, epoch). Global batch s is cut into processes x grad_accum micro-batches and rank r takes
its own slice, so ranks see different retain samples, the result does not depend on the number of
processes at a fixed effective batch, and --resume needs no data-loader state.

--strategy fsdp (llm/distributed.py) shards the model before anything runs on it: the reference
log-probs are computed once on the sharded model (all ranks take part), a live reference is a
second sharded copy, gradients are reduce-scattered once per optimizer step and clipped by the
norm of the whole gradient (squares summed over the shards in float64), evaluation runs on
the sharded model on every rank in lockstep, --resume reloads sharded checkpoints
(torch.distributed.checkpoint), and the final model is gathered once into one Hugging Face folder.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from llm import checkpoints, distributed
from llm.checkpoints import unwrap
from llm.config import ConfigError, TrainConfig, autocast_for, parser, precision_for, resolve, resume_view
from llm.data import DataError, load_idk, load_split
from llm.dataplan import Plan, fit_batch_to_data, make_plan
from llm.formatting import collate, encode_qa, eos_id
from llm.models import (ModelError, check_device, label_positions, load_model_and_tokenizer, logits_at,
                        lora_targets, row_sums,
                        token_counts, token_mean_logp)

__all__ = ["TrainConfig", "ConfigError", "TrainingStopped", "Objective", "finetune", "micro_losses",
           "prepare_run", "fit", "schedule", "Plan"]

USER_ERRORS = (ConfigError, DataError, ModelError)
EvalFn = Callable[..., dict]


@dataclass(frozen=True)
class Objective:
    """What a training mode other than fine-tuning adds to the loop (llm/unlearning.py builds
    unlearning's): passed in, so that this module never imports the objectives themselves."""
    methods: tuple                            # the method names (--method)
    resolve: Callable                         # (cfg) -> cfg with the method's defaults; ConfigError
    needs: Callable                           # (method) -> inputs it reads: "ref", "idk", "retain", "kl"
    loss: Callable                            # (run, groups, logits, logp, tokens, batch, items) -> parts


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
    plan: Plan
    train: list[dict]                      # encoded training (forget) sequences
    retain: list[dict] = dataclasses.field(default_factory=list)
    idk: dict = dataclasses.field(default_factory=dict)        # (item, idk) -> encoded
    ref: dict | None = None                # {"forget": [N], "idk": {(item, idk): value}}
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
    ``objective``: unlearning's (llm.unlearning.prepare_run passes it); None fine-tunes."""
    if (objective is None) != (mode == "finetune"):
        raise ValueError(f"mode {mode!r} with objective {objective!r}: unlearn through llm.unlearning")
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
    retain_rows, idk_rows = [], []
    if need & {"retain", "kl"}:
        if cfg.retain is None:
            raise ConfigError(f"{cfg.method} needs a retain split; pass --retain")
        retain_rows = _rows(cfg.retain, cfg)
        if not retain_rows:
            raise DataError("the retain set is empty; check --retain and --max-examples")
        run.retain = _encode(tok, retain_rows, cfg)
    if "idk" in need:
        idk_rows = load_idk(cfg.idk_file, cfg.data_dir)
    run.plan = make_plan(cfg, len(train_rows), len(retain_rows), len(idk_rows),
                         [len(e["input_ids"]) for e in run.train], [len(e["input_ids"]) for e in run.retain])
    if idk_rows:
        run.idk = {(i, k): encode_qa(tok, train_rows[i]["question"], idk_rows[k]["answer"],
                                     cfg.template, cfg.max_length) for i, k in run.plan.idk_pairs()}
    if run.sharded:
        _shard(run, need)
    if "ref" in need or "kl" in need:
        _build_reference(run, need)
    return run


def _shard(run: Run, need) -> None:
    """FSDP2 before any forward pass, so the reference pass already runs on the sharded model.

    The cache key's weight fingerprint is taken first (on the whole model every rank loaded); a
    live reference is a frozen copy sharded the same way (counted by ``python -m llm plan``)."""
    cfg = run.cfg
    if "ref" in need:
        from llm.refcache import model_fingerprint
        run.fingerprint = model_fingerprint(run.model, _identity(cfg))
    if "kl" in need or ("ref" in need and cfg.reference == "live"):
        ref = copy.deepcopy(run.model).eval().requires_grad_(False)
        run.ref_model = distributed.shard(ref, run.dist, run.precision, cfg.cpu_offload)
    if cfg.gradient_checkpointing:
        _checkpointing(run.model, lora=False)
    run.model = distributed.shard(run.model, run.dist, run.precision, cfg.cpu_offload)


def _build_reference(run: Run, need) -> None:
    cfg = run.cfg
    run.live_reference = "kl" in need or cfg.reference == "live"
    if "ref" in need and not run.live_reference:
        pairs = list(run.idk)
        seqs = {"forget": run.train}
        if pairs:
            seqs["idk"] = [run.idk[p] for p in pairs]

        def compute(force=False):
            return _cached_reference(run, seqs, force)

        if run.sharded:  # the passes are collective (FSDP gathers each layer): all ranks take part
            values = compute()
        else:  # rank 0 fills the cache, the others then read it
            if run.dist.main:
                values = compute()
            distributed.barrier(run.dist)
            if not run.dist.main:
                values = compute()
        run.ref = {"forget": torch.as_tensor(values["forget"]),
                   "idk": dict(zip(pairs, values["idk"].tolist())) if pairs else {}}
    if run.live_reference and not cfg.lora and run.ref_model is None:
        run.ref_model = copy.deepcopy(run.model).eval().requires_grad_(False)


def _identity(cfg: TrainConfig) -> str:
    if cfg.model in ("tiny", "small", "gpu"):
        return f"{cfg.model}|seed={cfg.seed}"
    return str(Path(cfg.model).resolve() if Path(cfg.model).exists() else cfg.model)


def _cached_reference(run: Run, seqs, force):
    from llm.refcache import cached_reference_logps
    # FSDP's bf16 policy rounds differently from autocast: keep the two apart in the cache
    precision = run.precision + ("/fsdp" if run.sharded and run.precision == "bf16-mixed" else "")
    return cached_reference_logps(run.model, seqs, run.tokenizer.pad_token_id, run.cfg.ref_cache,
                                  identity=_identity(run.cfg), precision=precision,
                                  batch_size=run.cfg.eval_batch_size, autocast=run.autocast, force=force,
                                  fingerprint=run.fingerprint)


# ---- one micro-batch ----------------------------------------------------------------------------

def micro_losses(run: Run, model, items) -> dict[str, torch.Tensor]:
    """Loss parts of one micro-batch ``items`` = [(item, retain, idk, epoch), ...] (one forward)."""
    device = run.dist.device
    groups = {"forget": [run.train[i] for i, _, _, _ in items]}
    if run.need & {"retain", "kl"}:
        groups["retain"] = [run.retain[r] for _, r, _, _ in items]
    if "idk" in run.need:
        groups["idk"] = [run.idk[(i, k)] for i, _, k, _ in items]
    rows = [row for g in groups.values() for row in g]
    batch = {k: v.to(device) for k, v in collate(rows, run.tokenizer.pad_token_id).items()}
    # The vocabulary projection only where it is used: the answer positions, and for a KL retain
    # term every real position of the retain rows (llm.models.logits_at).
    answer = label_positions(batch["labels"])
    keep, kl_keep = answer.clone(), torch.zeros_like(answer)
    if "kl" in run.need:
        retain = slice(len(groups["forget"]), len(groups["forget"]) + len(groups["retain"]))
        kl_keep[retain] = batch["attention_mask"][retain].bool()
        keep |= kl_keep
    with run.autocast():
        logits = logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
    nll = torch.nn.functional.cross_entropy(logits[answer[keep]].float(),
                                            batch["labels"][:, 1:][answer[:, :-1]], reduction="none")
    logp, tokens = row_sums(-nll, answer), token_counts(batch["labels"])
    if run.objective is not None:  # the KL term gets the retain rows' logits at their real positions
        return run.objective.loss(run, groups, logits[kl_keep[keep]], logp, tokens, batch, items)
    from theory.objectives import nll_loss
    loss = nll_loss(token_mean_logp(logp, tokens))
    return {"loss": loss, "forget_loss": loss.detach(), "retain_loss": torch.zeros(())}


# ---- model preparation, checkpoints -------------------------------------------------------------

def _prepare_model(run: Run):
    cfg, model = run.cfg, run.model
    if cfg.lora:
        from peft import LoraConfig, get_peft_model
        targets = lora_targets(model, cfg.lora_targets)
        with torch.random.fork_rng(devices=[]):  # seeded adapter init, caller's RNG untouched
            torch.manual_seed(cfg.seed)
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=0.0, target_modules=targets,
                                                     task_type="CAUSAL_LM"))
    if cfg.gradient_checkpointing and not run.sharded:  # (fsdp: enabled before sharding)
        _checkpointing(model, cfg.lora)
    model.train()
    run.model = model
    if run.dist.world > 1 and not run.sharded:
        ids = [run.dist.device.index] if run.dist.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def _checkpointing(model, lora: bool) -> None:
    model.config.use_cache = False
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora:  # frozen embeddings: make the checkpointed blocks' inputs require grad
        model.enable_input_require_grads()


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
    model = _prepare_model(run)
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


def schedule(optimizer, plan: Plan):
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


# ---- command line (llm/train_cli.py: finetune_main, unlearn_main) ----------------------------------

def _main(mode: str, argv, objective: Objective | None = None, make_eval_fn=None) -> int:
    """``python -m llm finetune|unlearn``; ``make_eval_fn(cfg)`` builds ``--eval-every``'s callback
    (passed in: it is evaluation code, which this module must not import)."""
    args = vars(parser(mode, objective.methods if objective else ()).parse_args(argv))
    as_json = args.pop("json")
    cfg = TrainConfig(**args)
    try:
        eval_fn = make_eval_fn(cfg) if cfg.eval_every and make_eval_fn else None
        out = _train(cfg, mode, eval_fn, objective)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the folder is as a kill leaves it: resumable or overwritable
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"python -m llm {mode}: stopped: {_interrupted(cfg, mode)}", file=sys.stderr)
        return 130
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").exists() else []
    steps = [r for r in rows if "loss" in r]
    result = {"out": str(out), "steps": len(steps), "first": steps[0] if steps else None,
              "last": steps[-1] if steps else None}
    if out.name.endswith(".partial") and not as_json:
        print(f"stopped after {len(steps)} steps; continue with --resume (state in {out})")
    elif int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result) if as_json else f"wrote {out} ({len(steps)} steps, final loss "
              f"{steps[-1]['loss']:.4f})" if steps else f"wrote {out}")
    return 0


def _interrupted(cfg: TrainConfig, mode: str) -> str:
    try:
        work = checkpoints.work_dir(Path(resolve(cfg, mode, 1).out))
    except ConfigError:
        work = None
    if work is None or not work.exists():
        return "interrupted before training started; nothing was written"
    return f"interrupted: {work} keeps the run: {checkpoints.status(work)}"
