"""Checkpoints of a training run (llm/train.py): resumable state, and the final model folder.

    <out>.partial/checkpoint-<step>/   written every --save-every steps, the newest kept
        ddp:  trainable.safetensors + optimizer.pt (rank 0 holds everything)
        fsdp: sharded/ (torch.distributed.checkpoint: every rank writes its own shards of the
              weights and AdamW state, and reads them back on --resume)
        scheduler.pt, rng.pt, state.json {"step"}
    <out>/   the final model as one Hugging Face folder (safetensors + config + tokenizer), fsdp's
             shards gathered once into rank 0's CPU memory

Resuming restores weights, AdamW moments, the schedule and the RNG exactly, so an interrupted run
continued with --resume is bit-identical to an uninterrupted one (tested for ddp and fsdp).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from llm import distributed
from llm.config import ConfigError
from llm.models import save_tokenizer

__all__ = ["unwrap", "trainable", "save", "latest", "load", "full_model", "save_final"]


def unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def trainable(model):
    return {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad}


def save(run, work: Path, step: int, model, optimizer, scheduler) -> None:
    """Called on every rank. ddp: rank 0 writes the trainable weights and AdamW state; fsdp: each
    rank writes its shards through torch.distributed.checkpoint (no rank holds the whole state)."""
    from safetensors.torch import save_file
    tmp, final = work / f".checkpoint-{step}.tmp", work / f"checkpoint-{step}"
    if run.dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier(run.dist)
    if run.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / "sharded"))
        distributed.barrier(run.dist)
    elif run.dist.main:
        save_file({n: p.detach().contiguous().cpu() for n, p in trainable(model).items()},
                  str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if not run.dist.main:
        distributed.barrier(run.dist)
        return
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    os.replace(tmp, final)
    for old in work.glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(run.dist)


def latest(work: Path) -> Path | None:
    found = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load(run, ckpt: Path, model, optimizer, scheduler) -> int:
    if (ckpt / "sharded").is_dir() != run.sharded:
        raise ConfigError(f"checkpoint {ckpt} was written with another --strategy; resume with the "
                          f"same flags or delete {ckpt.parent}")
    if run.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(ckpt / "sharded"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        _loadtrainable(ckpt, model, optimizer)
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((ckpt / "state.json").read_text())["step"]


def _loadtrainable(ckpt: Path, model, optimizer) -> None:
    from safetensors.torch import load_file
    state = load_file(str(ckpt / "trainable.safetensors"))
    params = trainable(model)
    if set(state) != set(params):
        raise ConfigError(f"checkpoint {ckpt} does not match this model/--lora setting; resume with "
                          f"the same flags or delete {ckpt.parent}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))


def full_model(run):
    """fsdp: the whole trained model, unsharded, on rank 0's CPU (None on other ranks), to save.

    Collective: every rank must call it. Built on the meta device and filled from FSDP's full
    state dict, so rank 0 never holds a second initialised copy; buffers (rotary tables) are not
    in a state dict and are copied over."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM
    state = get_model_state_dict(run.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not run.dist.main:
        return None
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(run.model.config)
    plain.load_state_dict(state, assign=True)
    for name, buf in run.model.named_buffers():
        owner, _, leaf = name.rpartition(".")
        plain.get_submodule(owner).register_buffer(leaf, buf.detach().cpu().clone(), persistent=False)
    plain.tie_weights()
    return plain


def save_final(run, work: Path, plain=None) -> None:
    """Rank 0: the model as one Hugging Face folder (``plain``: fsdp's gathered copy)."""
    model = plain if plain is not None else unwrap(run.model)
    if run.cfg.lora:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(work, safe_serialization=True)
    save_tokenizer(run.tokenizer, work)  # a tokenizer class transformers 4.x also loads
    cfg = dataclasses.asdict(run.cfg)
    cfg.update(mode=run.mode, steps=run.plan.steps, warmup_steps=run.plan.warmup,
               processes=run.dist.world, precision_used=run.precision)
    (work / "train_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
