"""Shared symbols and the two kinds of evidence every check combines.

A check is accepted only if a symbolic argument (``is_zero``, a series, a limit, ``dsolve``) AND a
numeric spot check at random points (``agree``, autograd, an ODE solver) both pass, so that a sympy
mistake (or an over-eager simplification) cannot hide.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

#: Every numeric spot check draws from ``rng(k)`` with its own k: same code, same points.
SEED = 20240405

# ---- symbols with the assumptions the paper makes ----------------------------------------------
R = sp.Symbol("R", real=True)                          # log(pi_theta / pi_ref)
beta = sp.Symbol("beta", positive=True)
logp, logp_ref = sp.symbols("logp logp_ref", real=True)  # log pi_theta(y|x), log pi_ref(y|x)
pi, pi_ref = sp.symbols("pi pi_ref", positive=True)      # pi_theta(y|x), pi_ref(y|x)
t = sp.Symbol("t", nonnegative=True)                     # GD step count / flow time
eta, eta0 = sp.symbols("eta eta0", positive=True)        # step size, per-sample step eta / n_f
n_f = sp.Symbol("n_f", positive=True, integer=True)      # number of forget samples
m0 = sp.Symbol("m0", real=True)                          # initial margin (log-odds of forget label)
g = sp.Symbol("g", positive=True)                        # per-sample gain gamma_ii or 1 + |q|^2


def rng(k: int) -> np.random.Generator:
    return np.random.default_rng(SEED + k)


def sigmoid(x):
    """Symbolic logistic function 1 / (1 + e^{-x})."""
    return 1 / (1 + sp.exp(-x))


def _sample_value(sym: sp.Symbol, r: np.random.Generator):
    if sym.is_integer:
        return sp.Integer(int(r.integers(2, 6)))
    if sym.is_positive or sym.is_nonnegative:
        return sp.Float(r.uniform(0.3, 2.0), 30)
    return sp.Float(r.uniform(-1.5, 1.5), 30)


def _clearly_nonzero(expr) -> bool:
    """A cheap refutation: ``expr`` evaluates (30 digits) to something far from 0 at a random point.

    Nonzero at one point means not identically zero, so this only ever speeds up a rejection;
    acceptance still needs a symbolic proof. Expressions that do not evaluate to a number are skipped.
    """
    r = np.random.default_rng(SEED)
    for _ in range(2):
        point = {s: _sample_value(s, r) for s in expr.free_symbols}
        try:
            value = complex(expr.evalf(30, subs=point))
        except (TypeError, ValueError):
            return False
        if np.isfinite(value) and abs(value) > 1e-12:
            return True
    return False


def is_zero(expr) -> bool:
    """True only if sympy can show ``expr`` vanishes identically (never a numeric guess)."""
    expr = sp.sympify(expr)
    if expr == 0:
        return True
    if _clearly_nonzero(expr):
        return False
    for rewrite in (sp.simplify,
                    lambda e: sp.simplify(sp.expand_log(e, force=True)),
                    lambda e: sp.simplify(sp.powsimp(sp.expand(e.rewrite(sp.exp)), force=True)),
                    lambda e: sp.simplify(sp.logcombine(e, force=True))):
        if rewrite(expr) == 0:
            return True
    return False


def equal(lhs, rhs) -> bool:
    return is_zero(sp.sympify(lhs) - sp.sympify(rhs))


def numeric(expr, args):
    """A float64 numpy function of ``args`` (lambdify), for spot checks against independent code."""
    return sp.lambdify(args, expr, modules=["scipy", "numpy"])


def close(a, b, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(a.shape == b.shape or a.size == 1 or b.size == 1) and \
        bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.allclose(a, b, rtol=rtol, atol=atol))


def agree(expr, args, reference, points, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    """``expr`` (lambdified) equals ``reference(*columns)`` at every row of ``points``."""
    columns = [np.asarray(c, dtype=np.float64) for c in np.asarray(points, dtype=np.float64).T]
    value = np.broadcast_to(numeric(expr, args)(*columns), columns[0].shape)
    return close(value, reference(*columns), rtol, atol)


def tex(lhs: str, rhs) -> str:
    """A formula for the document whose left side is raw LaTeX (sympy would mangle it as a symbol name)."""
    return f"{lhs} = {rhs if isinstance(rhs, str) else sp.latex(rhs)}"


def latex_eq(lhs, rhs) -> sp.Eq:
    """An unevaluated equation for the document (keeps both sides as written)."""
    return sp.Eq(lhs, rhs, evaluate=False)
