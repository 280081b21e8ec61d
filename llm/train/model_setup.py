"""The model as a training run (llm/train/loop.py) trains it: LoRA adapters, activation checkpointing,
DDP wrapping, FSDP2 sharding (llm/train/distributed.py)."""
from __future__ import annotations

import torch

from llm.train import distributed
from llm.models import lora_targets

__all__ = ["prepare_model", "shard_model", "checkpointing"]


def prepare_model(run):
    """``run.model`` ready to train: LoRA adapters (seeded), activation checkpointing, train mode;
    returned wrapped in DDP when several processes train whole copies."""
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
        checkpointing(model, cfg.lora)
    model.train()
    run.model = model
    if run.dist.world > 1 and not run.sharded:
        ids = [run.dist.device.index] if run.dist.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def checkpointing(model, lora: bool) -> None:
    """Activation checkpointing: trade compute for activation memory."""
    model.config.use_cache = False
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora:  # frozen embeddings: make the checkpointed blocks' inputs require grad
        model.enable_input_require_grads()


def shard_model(run) -> None:
    """FSDP2 before any forward pass (an objective's reference pass then runs on the sharded model)."""
    if run.cfg.gradient_checkpointing:
        checkpointing(run.model, lora=False)
    run.model = distributed.shard(run.model, run.dist, run.precision, run.cfg.cpu_offload)
