"""The collapse-rate study's settings and inputs: its ``Config`` (validated), the log-spaced steps it
records, the fine-tuned target it starts from (a stage, made once) and the forget / retain items.
``python -m llm collapse-rate`` (llm/studies/collapse_rate.py) runs GA and NPO from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.cache import config_hash
from infra.stages import Stages
from llm.data.tofu import DataError, load_split

__all__ = ["Config", "QUICK", "RATE_METHODS", "TARGET_RECIPES", "TINY_RECIPE", "record_steps", "tiny_target",
           "forget_items", "retain_items"]

#: The two methods whose collapse rate this study measures (llm/train/methods/ names).
RATE_METHODS = ("ga", "npo")
TINY_RECIPE = {"epochs": 20, "lr": 3e-3, "batch_size": 16, "seed": 42}
#: ``--model NAME`` for these bases fine-tunes a target once (a stage in --cache) with this recipe:
#: the from-scratch tiny Llama, and SmolLM2-135M-Instruct (pretrained: the paper's lr scale for a
#: small model, 5 epochs as the paper's fine-tuning; chat template, llm.models.default_template).
TARGET_RECIPES = {"tiny": TINY_RECIPE, "smol": {"epochs": 5, "lr": 1e-4, "batch_size": 8, "seed": 42}}


@dataclass(frozen=True)
class Config:
    model: str = "tiny"
    data_dir: str | None = None
    forget: str = "forget01"
    n_forget: int = 4                 # 0: every item of the forget split
    methods: tuple = RATE_METHODS
    beta: tuple = (0.1, 0.5, 1.0)
    optimizer: str = "sgd"
    lr: float = 1e-4
    max_grad_norm: float = 0.0        # 0: off
    weight_decay: float = 0.0         # AdamW only
    steps: int = 300
    seeds: int = 1
    seed: int = 0
    retain_items: int = 16
    per_decade: int = 12
    threshold: float = 10.0           # |forget_logratio| in nats
    fit_from: float = 0.0             # fit the laws over t >= this (0: the last decade, t >= steps/10)
    finetune_items: int = 200         # --model tiny: rows of full.json the target learns
    template: str = "llama2"          # config_from_args: llm.models.default_template(model)

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in RATE_METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown method {bad[0] if bad else '(none)'!r}; use ga and/or npo")
        if not all(np.isfinite(b) and b > 0 for b in self.beta) or not self.beta:
            raise ValueError(f"every --beta must be > 0 (got {list(self.beta)})")
        if self.steps < 10:
            raise ValueError(f"--steps must be >= 10 (got {self.steps})")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"--optimizer must be sgd or adamw (got {self.optimizer!r})")
        knobs = {"--lr": self.lr, "--max-grad-norm": self.max_grad_norm, "--threshold": self.threshold,
                 "--fit-from": self.fit_from}
        bad = [flag for flag, v in knobs.items() if not np.isfinite(v)]
        if bad:  # NaN would pass every comparison below (--max-grad-norm nan: no clipping)
            raise ValueError(f"{bad[0]} must be a finite number (got {knobs[bad[0]]})")
        if not self.lr > 0 or self.max_grad_norm < 0 or self.threshold <= 0:
            raise ValueError("need --lr > 0, --max-grad-norm >= 0 (0 = off) and --threshold > 0")
        if not 0 <= self.fit_from < self.steps:
            raise ValueError(f"--fit-from must be in [0, steps) (got {self.fit_from})")
        if self.seeds < 1 or self.n_forget < 0 or self.retain_items < 1 or self.per_decade < 1:
            raise ValueError("need --seeds >= 1, --n-forget >= 0, --retain-items >= 1, --per-decade >= 1")
        if self.seeds > 1 and self.n_forget == 0:
            raise ValueError("seeds differ only in which forget items they draw: pass --n-forget N "
                             "smaller than the split, or --seeds 1")


QUICK = dict(n_forget=3, steps=100, seeds=1, beta=(0.1, 1.0), retain_items=4, finetune_items=40,
             per_decade=10)


def record_steps(steps: int, per_decade: int) -> np.ndarray:
    """0, then ~per_decade log-spaced integer steps per decade up to ``steps`` (always included)."""
    grid = np.geomspace(1, steps, max(2, int(np.ceil(per_decade * np.log10(steps))) + 1))
    return np.unique(np.r_[0, np.round(grid).astype(int), steps])


# ---- the target and the data ---------------------------------------------------------------------

def tiny_target(cfg: Config, cache_dir: Path, log=print, force: bool = False) -> Path:
    """The base ``cfg.model`` (tiny or smol) fine-tuned on the last ``finetune_items`` rows of full,
    made once: a stage in ``cache_dir`` (infra/stages.py) keyed by those rows, the recipe and the
    code of ``_finetune_tiny`` (and of what it imports, llm/train/loop.py and llm/models.py included, so
    a new GGUF behind smol or an edit of the recipe's code re-trains it)."""
    rows = load_split("full", cfg.data_dir)[-cfg.finetune_items:]
    stage = Stages(cache_dir, force, log).run(
        f"{cfg.model}-target", {"rows": config_hash(rows), "n_rows": len(rows),
                                "recipe": TARGET_RECIPES[cfg.model], "template": cfg.template,
                                **_base_identity(cfg.model)},
        [], lambda path: _finetune_tiny(cfg, path / "model", log), code=(_finetune_tiny,))
    return stage["path"] / "model"


def _base_identity(model: str) -> dict:
    """The base's weights in the stage key: smol's GGUF content hash (tiny is built from the seed)."""
    if model != "smol":
        return {}
    from llm.models import gguf_model_dir, smol_gguf
    return {"base": gguf_model_dir(smol_gguf()).name}


def _finetune_tiny(cfg: Config, out: Path, log=print) -> dict:
    """Fine-tune ``cfg.model`` with its TARGET_RECIPES entry on the last ``finetune_items`` rows of
    full into ``out``."""
    from llm.train.loop import TrainConfig, finetune
    log(f"fine-tuning the {cfg.model} target once on the last {cfg.finetune_items} TOFU rows -> {out}")
    r = TARGET_RECIPES[cfg.model]
    finetune(TrainConfig(model=cfg.model, data_dir=cfg.data_dir, split="full",
                         max_examples=cfg.finetune_items, epochs=r["epochs"], lr=r["lr"],
                         batch_size=r["batch_size"], effective_batch=r["batch_size"], seed=r["seed"],
                         template=cfg.template, out=str(out), overwrite=True, device="cpu"))
    return {"rows": cfg.finetune_items}


def forget_items(cfg: Config, seed: int) -> list[dict]:
    rows = load_split(cfg.forget, cfg.data_dir)
    if not rows:
        raise DataError(f"forget split {cfg.forget!r} has no items; pick a non-empty forgetNN split")
    if cfg.seeds > 1 and cfg.n_forget >= len(rows):
        raise ValueError(f"--n-forget {cfg.n_forget} is not below the {len(rows)} items of "
                         f"{cfg.forget}: all {cfg.seeds} seeds would draw the same items; pass "
                         f"--n-forget below {len(rows)} or --seeds 1")
    if cfg.n_forget and cfg.n_forget < len(rows):
        pick = np.random.default_rng([cfg.seed + seed, 17]).choice(len(rows), cfg.n_forget, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    return rows


def retain_items(cfg: Config, forget: list[dict]) -> list[dict]:
    """The last ``retain_items`` rows of full before the forget split's authors (fixed, no seed)."""
    full = load_split("full", cfg.data_dir)
    n_forget_split = len(load_split(cfg.forget, cfg.data_dir))
    before = full[:len(full) - n_forget_split]
    return before[-cfg.retain_items:]

