"""The data plan of a training run: which items every rank sees at every step, from (seed, step).

Epoch e visits the training (forget) set in a seeded permutation; each forget item draws its
retain / IDK partner from a generator seeded by (seed, epoch). Global batch s is cut into
processes x grad_accum micro-batches and rank r takes its own slice, so the run does not depend on
the number of processes at a fixed effective batch and --resume needs no data-loader state.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import sys
from dataclasses import dataclass

import torch

from llm.config import ConfigError, TrainConfig

__all__ = ["Plan", "fit_batch_to_data", "make_plan"]

def _generator(seed: int, *tags) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *tags))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))


@functools.lru_cache(maxsize=64)
def _epoch_plan(seed: int, epoch: int, n: int, n_retain: int, n_idk: int):
    """(order of the n training items, retain partner of each item, IDK answer of each item)."""
    order = torch.randperm(n, generator=_generator(seed, epoch, "order")).tolist()
    retain = torch.randint(max(n_retain, 1), (n,), generator=_generator(seed, epoch, "retain")).tolist()
    idk = torch.randint(max(n_idk, 1), (n,), generator=_generator(seed, epoch, "idk")).tolist()
    return order, retain, idk


@dataclass
class Plan:
    n: int                     # training (forget) items
    n_retain: int
    n_idk: int
    effective_batch: int
    steps: int
    steps_per_epoch: int
    warmup: int
    seed: int

    def items(self, step: int, rank: int, world: int, batch_size: int, accum: int):
        """This rank's micro-batches of optimizer step ``step``: lists of (item, retain, idk, epoch)."""
        base = step * self.effective_batch
        micro = []
        for m in range(accum):
            chunk = rank * accum + m
            positions = range(base + chunk * batch_size, base + (chunk + 1) * batch_size)
            micro.append([self.item_at(p) for p in positions])
        return micro

    def item_at(self, position: int):
        epoch, j = divmod(position, self.n)
        order, retain, idk = _epoch_plan(self.seed, epoch, self.n, self.n_retain, self.n_idk)
        i = order[j]
        return i, retain[i], idk[i], epoch

    def idk_pairs(self) -> list[tuple[int, int]]:
        """Every (forget item, IDK answer) pair the run will use, in first-use order."""
        seen = {}
        for epoch in range(math.ceil(self.steps * self.effective_batch / self.n)):
            _, _, idk = _epoch_plan(self.seed, epoch, self.n, self.n_retain, self.n_idk)
            for i in range(self.n):
                seen.setdefault((i, idk[i]), None)
        return list(seen)


def make_plan(cfg: TrainConfig, n: int, n_retain: int = 0, n_idk: int = 0) -> Plan:
    steps = cfg.epochs * n // cfg.effective_batch  # as TOFU / the NPO repo compute max_steps
    if steps < 1:
        raise ConfigError(f"{n} training examples x {cfg.epochs} epochs make no full batch of "
                          f"{cfg.effective_batch}; lower --effective-batch/--batch-size or raise --epochs")
    per_epoch = max(1, steps // cfg.epochs)
    return Plan(n, n_retain, n_idk, cfg.effective_batch, steps, per_epoch,
                int(round(cfg.warmup_epochs * per_epoch)), cfg.seed)


def fit_batch_to_data(cfg: TrainConfig, n: int, dist) -> TrainConfig:
    """A training set smaller than one effective batch (a quick try with --max-examples 8 and the
    default batch of 32) trains with the largest effective batch it fills, saying so, instead of
    failing; train_config.json records the batch actually used."""
    per_step = cfg.batch_size * dist.world
    if n * cfg.epochs >= cfg.effective_batch or n * cfg.epochs < per_step:
        return cfg  # enough data, or too little even for one micro-batch (make_plan says so)
    accum = n * cfg.epochs // per_step
    if dist.main:
        print(f"note: {n} examples x {cfg.epochs} epochs do not fill the effective batch of "
              f"{cfg.effective_batch}; using {per_step * accum} ({cfg.batch_size} x {accum} accumulation"
              f"{f' x {dist.world} processes' if dist.world > 1 else ''})", file=sys.stderr)
    return dataclasses.replace(cfg, grad_accum=accum, effective_batch=per_step * accum)
