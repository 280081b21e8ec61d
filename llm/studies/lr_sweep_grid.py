"""The lr sweep's grid and its file: which (task, method, beta, lr, clip) rows, in which order, and
the validated reader of the rows they produce (``python -m llm lr-sweep`` runs them: llm/studies/lr_sweep.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from llm.studies.tofu_claims import USABLE  # one definition of "comparable utility"

__all__ = ["SweepError", "Spec", "grid", "read_sweep", "collapse_epoch", "best_useful_fq", "ROW_KEYS",
           "DEFAULT_OUT", "LRS", "BETAS"]

DEFAULT_OUT = Path("results/tofu_cpu/lr_sweep.json")
ROW_KEYS = {"task": str, "method": str, "beta": (float, type(None)), "lr": float,
            "max_grad_norm": float, "collapse_epoch": (int, type(None)), "final_mu": float,
            "best_fq": (float, type(None))}
LRS = (3e-5, 1e-4, 2e-4, 3e-4, 1e-3, 3e-3)
BETAS = (0.1, 1.0)


class SweepError(ValueError):
    """A missing or malformed sweep file / pipeline folder: one line naming the fix."""



# ---- the grid ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    task: str
    method: str            # GA or NPO
    beta: float | None
    lr: float
    max_grad_norm: float

    def key(self) -> tuple:
        return (self.task, self.method, self.beta, float(self.lr), float(self.max_grad_norm))


def grid(lrs=LRS, betas=BETAS, tasks=("forget10", "forget05"), clips=(1.0, 0.0)) -> list[Spec]:
    """Every (task, method, beta, lr, clip), in order of priority so that a partial sweep is still
    useful: level = beta's rank (GA and the first beta: 0) + clip's rank (the first clip: 0); within
    a level the first task first, GA before NPO, then the lrs. Level 0 holds the calibration runs
    (GA, first task, first clip) and NPO's first beta beside them."""
    specs = [Spec(task, method, beta, lr, clip) for clip in clips for task in tasks
             for method, beta in [("GA", None)] + [("NPO", b) for b in betas] for lr in lrs]

    def key(s):
        rank = 0 if s.beta is None else betas.index(s.beta)
        return (rank + clips.index(s.max_grad_norm), tasks.index(s.task), clips.index(s.max_grad_norm),
                s.method != "GA", rank, lrs.index(s.lr))

    return sorted(specs, key=key)


# ---- the file ------------------------------------------------------------------------------------

def read_sweep(path) -> dict:
    """The sweep document {"recipe", "rows": [...]}, validated; SweepError (one line) otherwise."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f"{path} not found; run python -m llm lr-sweep first")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno}); re-run "
                         f"python -m llm lr-sweep") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise SweepError(f"{path}: expected an object with a 'rows' list; re-run python -m llm lr-sweep")
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, dict):
            raise SweepError(f"{path}: row {i} is not an object; re-run python -m llm lr-sweep")
        for key, kind in ROW_KEYS.items():
            value = row.get(key, ...)
            if isinstance(value, int) and not isinstance(value, bool) and float in (
                    kind if isinstance(kind, tuple) else (kind,)):
                value = float(value)
            if value is ... or not isinstance(value, kind):
                raise SweepError(f"{path}: row {i} has no valid {key!r}; re-run python -m llm lr-sweep")
        if row["method"] not in ("GA", "NPO"):
            raise SweepError(f"{path}: row {i} has unknown method {row['method']!r} (GA or NPO)")
    return doc


def collapse_epoch(epochs, mu) -> int | None:
    """First epoch whose Model Utility is below half of epoch 0's; None if never."""
    if not mu:
        return None
    base = mu[0]
    for e, m in zip(epochs, mu):
        if e > 0 and m < USABLE * base:
            return int(round(e))
    return None



def best_useful_fq(epochs, mu, fq):
    """The best Forget Quality over the epochs (after 0) whose MU is at least half the initial MU
    (as the claims table's "at comparable utility"); None if no such epoch has an FQ."""
    ok = [f for e, m, f in zip(epochs, mu, fq) if e > 0 and m >= USABLE * mu[0] and f is not None
          and math.isfinite(f)]
    return max(ok) if ok else None
