"""One registry of checks: id, statement, method, and the function that proves the statement.

Each check function takes the candidate expression(s) as keyword arguments whose defaults are this
package's derivation, so the same function can be handed a mutated copy (a flipped sign, a dropped
factor 2) and must then return False. ``run_checks`` calls every check with its defaults.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Check:
    id: str            # "<issue item>.<slug>", e.g. "3.prop1-series"
    item: int          # item 1-8 of the theory issue
    paper: str         # the paper object: "Eq. 3", "Prop. 1", "Lemma 4", ...
    statement: str
    method: str        # how it is proved and spot-checked
    run: Callable[..., bool]
    show: Callable[[], list] = field(default=lambda: [])  # (caption, sympy object) pairs


@dataclass(frozen=True)
class Result:
    id: str
    item: int
    paper: str
    statement: str
    verified: bool
    method: str
    seconds: float
    error: str = ""

    def as_dict(self) -> dict:
        return {"id": self.id, "item": self.item, "paper": self.paper, "statement": self.statement,
                "verified": self.verified, "method": self.method}


CHECKS: list[Check] = []


def check(id: str, item: int, paper: str, statement: str, method: str, show=None):
    """Decorator: register ``fn`` as the proof of ``statement``; returns ``fn`` unchanged."""
    def register(fn):
        if any(c.id == id for c in CHECKS):
            raise ValueError(f"duplicate check id {id!r}")
        CHECKS.append(Check(id, item, paper, statement, method, fn, show or (lambda: [])))
        return fn
    return register


def run_check(c: Check) -> Result:
    start = time.perf_counter()
    try:
        ok, error = bool(c.run()), ""
    except Exception as exc:  # a crashing proof is a failed proof, reported, not raised
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return Result(c.id, c.item, c.paper, c.statement, ok, c.method,
                  time.perf_counter() - start, error)
