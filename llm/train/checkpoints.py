"""The output folder of a training run (llm/train/loop.py): its lifecycle, resumable checkpoints, the final model.

    <out>.partial/                 the run until it is finished
        run.json                   the resolved settings a --resume must repeat (llm.train.config.resume_view)
        log.jsonl                  one row per optimizer step (and eval rows)
        checkpoint-<step>/         written every --save-every steps, the newest kept
            ddp:  trainable.safetensors + optimizer.pt (rank 0 holds everything)
            fsdp: sharded/ (torch.distributed.checkpoint: every rank writes its own shards of the
                  weights and AdamW state, and reads them back on --resume)
            scheduler.pt, rng.pt, state.json {"step", "plan"}
        model + tokenizer files, then train_config.json LAST: its presence says the final model is complete
    <out>/   the final model as one Hugging Face folder (safetensors + config + tokenizer), fsdp's
             shards gathered once into rank 0's CPU memory

Every step is atomic with respect to the one before: a checkpoint is written as
``.checkpoint-<step>.tmp`` and renamed, and only then is the older one deleted; the final model is
written beside the last checkpoint, and finishing is one rename ``<out>.partial -> <out>`` (an
``--overwrite``-n ``<out>`` is first moved aside to ``<out>.old``), after which the checkpoints are
deleted. So a kill at ANY instant leaves a finished ``<out>``, or an ``<out>.partial`` that
``--resume`` continues (from its last checkpoint, or, when the final model is complete, by doing
only the rename) or ``--overwrite`` replaces; ``check_folders`` says which in one line.

Resuming restores weights, AdamW moments, the schedule and the RNG exactly, so an interrupted run
continued with --resume is bit-identical to an uninterrupted one (tested for ddp and fsdp, with
kills during training, during a checkpoint save and during the final save: tests/test_resume.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from infra.files import write_json, write_text
from llm.train import distributed
from llm.train.config import ConfigError, resume_changes
from llm.models import save_tokenizer

__all__ = ["unwrap", "trainable", "save", "latest", "load", "full_model", "save_final", "work_dir",
           "check_folders", "start", "finish", "status", "truncate_log", "SETTINGS", "FINISHED"]

SETTINGS = "run.json"              # in <out>.partial: {"settings": resume_view(...)}
FINISHED = "train_config.json"     # written last by save_final: the final model is complete


# ---- the folder's lifecycle ---------------------------------------------------------------------

def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def status(work: Path) -> str:
    """What an interrupted ``work`` allows, for messages: finish it, resume it, or start over."""
    if (work / FINISHED).exists():
        return "its final model is complete: --resume finishes it, --overwrite starts over"
    ckpt = latest(work)
    if ckpt is not None:
        return f"--resume continues it from {ckpt.name}, --overwrite starts over"
    return "it has no checkpoint to resume (see --save-every): --overwrite starts over"


def check_folders(out: Path, resume: bool, overwrite: bool, settings: dict) -> None:
    """Refuse, in one line naming the fix, a run the folders do not allow. Called on every rank
    before anything is loaded or written; ``settings`` is this run's ``llm.train.config.resume_view``."""
    work = work_dir(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or another --out")
    if not resume:
        if work.exists() and not overwrite:
            raise ConfigError(f"{work} holds an interrupted run; {status(work)}")
        return
    if not work.exists():
        raise ConfigError(f"no interrupted run in {work} to resume; drop --resume")
    if not (work / FINISHED).exists() and latest(work) is None:
        raise ConfigError(f"no checkpoint to resume in {work} (it stopped before its first "
                          f"--save-every checkpoint); pass --overwrite instead of --resume to start over")
    try:
        saved = json.loads((work / SETTINGS).read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{work} has no readable {SETTINGS} (the settings it was started with); "
                          f"pass --overwrite instead of --resume to start over") from None
    changes = resume_changes(saved, json.loads(json.dumps(settings)))
    if changes:
        raise ConfigError(f"{work} was started with other settings ({', '.join(changes)}); repeat its "
                          f"flags to --resume it, or pass --overwrite instead of --resume to start over")


def start(out: Path, settings: dict) -> None:
    """Rank 0, once the run is prepared: a fresh ``<out>.partial`` (an --overwrite-n one removed)."""
    work = work_dir(out)
    trash = work.with_name(work.name + ".old")
    shutil.rmtree(trash, ignore_errors=True)
    if work.exists():   # moved aside first: a kill while deleting must not leave half a checkpoint
        os.replace(work, trash)
        shutil.rmtree(trash)
    work.mkdir(parents=True)
    write_json(work / SETTINGS, {"settings": settings})


def finish(out: Path) -> None:
    """Rank 0, after ``save_final``: ``<out>.partial`` becomes ``<out>`` by one rename (the commit),
    then the checkpoints and the settings file are removed from it."""
    work, trash = work_dir(out), out.with_name(out.name + ".old")
    shutil.rmtree(trash, ignore_errors=True)   # left by a kill during an earlier finish
    if out.exists():
        os.replace(out, trash)
    os.replace(work, out)
    shutil.rmtree(trash, ignore_errors=True)
    for leftover in [*out.glob("checkpoint-*"), *out.glob(".checkpoint-*.tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)
    (out / SETTINGS).unlink(missing_ok=True)


def truncate_log(log_path: Path, step: int) -> None:
    """Resume: keep the rows up to ``step`` (the checkpoint's), atomically; a row cut short by a
    kill ends the log there."""
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            break
        if row.get("step", 0) <= step:
            kept.append(line)
    write_text(log_path, "".join(r + "\n" for r in kept))


# ---- checkpoints --------------------------------------------------------------------------------


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
    (tmp / "state.json").write_text(json.dumps({"step": step, "plan": dataclasses.asdict(run.plan)}))
    os.replace(tmp, final)
    for old in work.glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(run.dist)


def latest(work: Path) -> Path | None:
    found = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load(run, ckpt: Path, model, optimizer, scheduler) -> int:
    meta = json.loads((ckpt / "state.json").read_text())
    plan = json.loads(json.dumps(dataclasses.asdict(run.plan)))  # as state.json holds it (tuples -> lists)
    if meta.get("plan", plan) != plan:  # same flags, other data (a changed split file)
        diff = ", ".join(f"{k}: {meta['plan'].get(k)} -> {v}" for k, v in plan.items()
                         if meta["plan"].get(k) != v)
        raise ConfigError(f"the data changed since {ckpt} was written ({diff}); restore it, or pass "
                          f"--overwrite instead of --resume to start over")
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
    return meta["step"]


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
    """Rank 0: the model as one Hugging Face folder (``plain``: fsdp's gathered copy) in ``work``,
    beside the last checkpoint; ``train_config.json`` last and atomically (the completion mark)."""
    model = plain if plain is not None else unwrap(run.model)
    if run.cfg.lora:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(work, safe_serialization=True)
    save_tokenizer(run.tokenizer, work)  # a tokenizer class transformers 4.x also loads
    cfg = dataclasses.asdict(run.cfg)
    cfg.update(mode=run.mode, steps=run.plan.steps, warmup_steps=run.plan.warmup,
               processes=run.dist.world, precision_used=run.precision)
    write_json(work / FINISHED, cfg)
