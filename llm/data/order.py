"""The data plan of a training run: which items every rank sees at every step, from (seed, step).

Epoch e visits the training (forget) set in a seeded permutation; each forget item draws its
retain / IDK partner from a generator seeded by (seed, epoch). Global batch s is cut into
processes x grad_accum micro-batches and rank r takes its own slice, so the run does not depend on
the number of processes at a fixed effective batch and --resume needs no data-loader state.

With ``--bucket K`` the seeded order is sorted by length within windows of K optimizer steps
(``_bucketed``): still a pure function of (seed, step, the items' lengths), so every item is seen
once per epoch, the same seed gives the same batches and --resume stays bit-identical; the run is a
different (equally seeded) run from the unbucketed one.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import sys
from dataclasses import dataclass

import torch

from llm.train.config import ConfigError, TrainConfig

__all__ = ["DataOrder", "fit_batch_to_data", "make_order"]

def _generator(seed: int, *tags) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *tags))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))


@functools.lru_cache(maxsize=64)
def _epoch_plan(seed: int, epoch: int, n: int, n_retain: int, n_idk: int, window: int = 0,
                lengths: tuple = (), retain_lengths: tuple = ()):
    """(order of the n training items, retain partner of each item, IDK answer of each item)."""
    order = torch.randperm(n, generator=_generator(seed, epoch, "order")).tolist()
    retain = torch.randint(max(n_retain, 1), (n,), generator=_generator(seed, epoch, "retain")).tolist()
    idk = torch.randint(max(n_idk, 1), (n,), generator=_generator(seed, epoch, "idk")).tolist()
    if window > 1 and lengths:
        order, retain = _bucketed(order, retain, window, lengths, retain_lengths)
    return order, retain, idk


def _bucketed(order: list, retain: list, window: int, lengths: tuple, retain_lengths: tuple):
    """Length buckets: within each run of ``window`` consecutive items of the seeded order, the items
    longest first (a stable sort: ties keep the seeded order), so that a batch holds rows of similar
    length and pads little. The retain partners drawn for the window's items (the same uniform
    draws) are re-paired longest with longest, which changes no sample, only which batch of the
    window it lands in."""
    out, partner = [], list(retain)
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        out += chunk
        if retain_lengths:
            draws = sorted((retain[i] for i in chunk), key=lambda r: -retain_lengths[r])
            for i, r in zip(chunk, draws):
                partner[i] = r
    return out, partner


@dataclass
class DataOrder:
    n: int                     # training (forget) items
    n_retain: int
    n_idk: int
    effective_batch: int
    steps: int
    steps_per_epoch: int
    warmup: int
    seed: int
    window: int = 0            # length buckets: items per sorted window (0: the plain seeded order)
    lengths: tuple = ()        # tokens of each training item / retain item (for the buckets)
    retain_lengths: tuple = ()

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
        order, retain, idk = self._epoch(epoch)
        i = order[j]
        return i, retain[i], idk[i], epoch

    def _epoch(self, epoch: int):
        return _epoch_plan(self.seed, epoch, self.n, self.n_retain, self.n_idk, self.window,
                           self.lengths, self.retain_lengths)

    def idk_pairs(self) -> list[tuple[int, int]]:
        """Every (forget item, IDK answer) pair the run will use, in first-use order."""
        seen = {}
        for epoch in range(math.ceil(self.steps * self.effective_batch / self.n)):
            _, _, idk = self._epoch(epoch)
            for i in range(self.n):
                seen.setdefault((i, idk[i]), None)
        return list(seen)


def make_order(cfg: TrainConfig, n: int, n_retain: int = 0, n_idk: int = 0, lengths=(),
              retain_lengths=()) -> DataOrder:
    """``lengths`` / ``retain_lengths``: tokens per item, used when ``cfg.bucket`` > 0 (the window
    of the length buckets in optimizer steps)."""
    steps = cfg.epochs * n // cfg.effective_batch  # as TOFU / the NPO repo compute max_steps
    if steps < 1:
        raise ConfigError(f"{n} training examples x {cfg.epochs} epochs make no full batch of "
                          f"{cfg.effective_batch}; lower --effective-batch/--batch-size or raise --epochs")
    per_epoch = max(1, steps // cfg.epochs)
    if cfg.bucket < 0:
        raise ConfigError(f"--bucket must be >= 0 (got {cfg.bucket})")
    window = cfg.bucket * cfg.effective_batch if cfg.bucket and lengths else 0
    return DataOrder(n, n_retain, n_idk, cfg.effective_batch, steps, per_epoch,
                int(round(cfg.warmup_epochs * per_epoch)), cfg.seed, window,
                tuple(lengths) if window else (), tuple(retain_lengths) if window else ())


def fit_batch_to_data(cfg: TrainConfig, n: int, dist) -> TrainConfig:
    """A training set smaller than one effective batch (a quick try with --max-examples 8 and the
    default batch of 32) trains with the largest effective batch it fills, saying so, instead of
    failing; train_config.json records the batch actually used."""
    per_step = cfg.batch_size * dist.world
    if n * cfg.epochs >= cfg.effective_batch or n * cfg.epochs < per_step:
        return cfg  # enough data, or too little even for one micro-batch (make_order says so)
    accum = n * cfg.epochs // per_step
    if dist.main:
        print(f"note: {n} examples x {cfg.epochs} epochs do not fill the effective batch of "
              f"{cfg.effective_batch}; using {per_step * accum} ({cfg.batch_size} x {accum} accumulation"
              f"{f' x {dist.world} processes' if dist.world > 1 else ''})", file=sys.stderr)
    return dataclasses.replace(cfg, grad_accum=accum, effective_batch=per_step * accum)
