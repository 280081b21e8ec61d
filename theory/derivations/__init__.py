"""Machine-checked derivations of the paper's theory; ``python -m theory`` runs every check.

Each derivation is a plain function returning sympy objects; each check (registered in
``registry.CHECKS`` with id, statement and method) proves one statement symbolically AND spot-checks
it numerically (finite differences, torch float64 autograd, ODE solvers, or ``theory.objectives`` /
``theory.predictions``). Modules, in paper order:

* ``npo``        items 1-3: Eq. 3 in both forms, the weight W of Eqs. 4-5, Proposition 1;
* ``relations``  item 4: NPO vs DPO, Eq. 17 with Table 2, KTO, IDK;
* ``theorem2``   items 5-6: Theorem 2's setting (alpha recursion, b = Gamma alpha), Lemmas 3-4, rates;
* ``orthogonal`` item 6: exact and leading-order GA/NPO trajectories for orthogonal inputs;
* ``tabular``    item 7: the K-class softmax / tabular model of Sec. 2.1;
* ``typos``      item 8: the arXiv v1 misprints, printed form rejected and corrected form accepted.
"""
from __future__ import annotations

from . import npo, relations, theorem2, orthogonal, tabular, typos  # noqa: F401  (registers checks)
from .registry import CHECKS, Check, Result, run_check

ITEMS = {
    1: "The NPO loss (Eq. 3)",
    2: "The gradient weight W (Eqs. 4-5)",
    3: "Proposition 1: the beta -> 0 limit",
    4: "NPO, DPO, the GA family (Eq. 17, Table 2), KTO and IDK",
    5: "Theorem 2: the setting",
    6: "Lemmas 3 and 4, the combined rates, orthogonal inputs",
    7: "The K-class softmax / tabular model (Sec. 2.1)",
    8: "Typos of arXiv v1",
}


def select(selectors=None) -> list[Check]:
    """Checks whose id equals a selector or whose item number is one; all checks when None."""
    if not selectors:
        return list(CHECKS)
    unknown = [s for s in selectors if not any(s in (c.id, str(c.item)) for c in CHECKS)]
    if unknown:
        raise KeyError(f"unknown check {unknown[0]!r}; choose an item 1-8 or an id from 'python -m theory --list'")
    return [c for c in CHECKS if c.id in selectors or str(c.item) in selectors]


def run_checks(selectors=None) -> list[Result]:
    return [run_check(c) for c in select(selectors)]


__all__ = ["CHECKS", "Check", "ITEMS", "Result", "run_check", "run_checks", "select"]
