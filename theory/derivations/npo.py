"""Items 1-3: the NPO loss (Eq. 3), its gradient weight (Eqs. 4-5) and Proposition 1 (beta -> 0).

Per sample, with R = log(pi_theta / pi_ref) (paper-digest section 1):
    L_NPO = -(2/beta) log sigma(-beta R) = (2/beta) log(1 + (pi_theta/pi_ref)^beta),
    dL_NPO/dR = W = 2 sigma(beta R) = 2 pi^beta / (pi^beta + pi_ref^beta),
and since pi_ref is frozen, grad R = grad log pi_theta, so grad L_NPO = E[W grad log pi_theta]
while grad L_GA = E[grad log pi_theta] (W = 1).
"""
from __future__ import annotations

import mpmath
import numpy as np
import sympy as sp
import torch

from .. import objectives as ob
from ._tools import R, agree, beta, close, equal, latex_eq, logp, logp_ref, pi, pi_ref, rng, sigmoid, tex
from .registry import check

L_NPO = sp.Symbol(r"\mathcal{L}_{\mathrm{NPO},\beta}")
W_SYM = sp.Symbol("W")


# ---- derivations: plain functions returning sympy objects ---------------------------------------

def npo_loss_logsigmoid(R=R, beta=beta):
    """Eq. 3, first form: -(2/beta) log sigma(-beta R)."""
    return -(2 / beta) * sp.log(sigmoid(-beta * R))


def npo_loss_ratio(pi=pi, pi_ref=pi_ref, beta=beta):
    """Eq. 3, second form: (2/beta) log(1 + (pi/pi_ref)^beta)."""
    return (2 / beta) * sp.log(1 + (pi / pi_ref) ** beta)


def npo_weight():
    """The gradient weight as the paper states it: W = 2 sigma(beta R)."""
    return 2 * sigmoid(beta * R)


def npo_weight_ratio():
    """The same weight in the ratio form of Eqs. 4-5: 2 pi^beta / (pi^beta + pi_ref^beta)."""
    return 2 * pi ** beta / (pi ** beta + pi_ref ** beta)


def npo_weight_derived():
    """dL_NPO/dR, differentiated from Eq. 3 (the chain rule then gives W grad log pi)."""
    return sp.simplify(sp.diff(npo_loss_logsigmoid(), R))


def weight_expansion():
    """W = 1 + beta R / 2 + O(beta^3): the beta^2 term vanishes."""
    return 1 + beta * R / 2


def prop1_shifted_loss():
    """L_NPO - (2/beta) log 2 = (2/beta) log((1 + e^{beta R}) / 2), per sample."""
    return npo_loss_logsigmoid() - (2 / beta) * sp.log(2)


def prop1_limit():
    """Proposition 1: lim_{beta -> 0} [L_NPO - (2/beta) log 2] = R = log pi - log pi_ref."""
    return sp.limit(prop1_shifted_loss(), beta, 0, "+")


def prop1_expansion():
    """The beta-series of the shifted loss to O(beta^4)."""
    return R + beta * R ** 2 / 4 - beta ** 3 * R ** 4 / 96


# ---- numeric references, independent of sympy -----------------------------------------------

def _per_sample_npo(lp, lr, b):
    return np.array([ob.npo_loss(np.array([x]), np.array([y]), z) for x, y, z in zip(lp, lr, b)])


def _npo_points(k, n=24):
    r = rng(k)
    return np.column_stack([r.uniform(-20, 0, n), r.uniform(-20, 0, n), r.uniform(0.05, 5, n)])


def _order_of_error(error, h):
    """Observed order p of error(h) ~ h^p from halving h: log2(error(h) / error(h/2))."""
    return float(mpmath.log(abs(error(h)) / abs(error(h / 2)), 2))


# ---- item 1: Eq. 3 ------------------------------------------------------------------------------

@check("1.npo-loss-forms", 1, "Eq. 3",
       "NPO loss: -(2/beta) log sigma(-beta R) = (2/beta) log(1 + (pi/pi_ref)^beta), R = log(pi/pi_ref)",
       "simplify(lhs - rhs) = 0 after R = log(pi/pi_ref); both forms equal objectives.npo_loss at 24 random points",
       show=lambda: [("log-sigmoid form", latex_eq(L_NPO, npo_loss_logsigmoid())),
                     ("ratio form", latex_eq(L_NPO, npo_loss_ratio()))])
def check_npo_loss_forms(logsigmoid_form=None, ratio_form=None) -> bool:
    lf = npo_loss_logsigmoid() if logsigmoid_form is None else logsigmoid_form
    rf = npo_loss_ratio() if ratio_form is None else ratio_form
    symbolic = equal(lf.subs(R, sp.log(pi / pi_ref)), rf)
    args = (logp, logp_ref, beta)
    pts = _npo_points(1)
    ref = _per_sample_npo
    return symbolic and agree(lf.subs(R, logp - logp_ref), args, ref, pts) and \
        agree(rf.subs({pi: sp.exp(logp), pi_ref: sp.exp(logp_ref)}), args, ref, pts)


@check("1.npo-bounded-below", 1, "Eq. 3",
       "L_NPO > 0 for every R and beta > 0, with infimum 0 approached as pi_theta -> 0 (R -> -oo)",
       "limit(L, R, -oo) = 0 and dL/dR > 0 (sympy assumptions); objectives.npo_loss > 0 and -> 0 on a grid",
       show=lambda: [("infimum", latex_eq(sp.Limit(L_NPO, R, -sp.oo), 0)),
                     ("monotone", latex_eq(sp.Derivative(L_NPO, R), npo_weight_derived()))])
def check_npo_bounded_below(loss=None) -> bool:
    loss = npo_loss_logsigmoid() if loss is None else loss
    symbolic = sp.limit(loss, R, -sp.oo) == 0 and sp.diff(loss, R).is_positive is True
    r = np.concatenate([rng(2).uniform(-40, 40, 32), [-200.0]])
    values = sp.lambdify((R, beta), loss, "numpy")(r, 1.0)
    ours = _per_sample_npo(r, np.zeros_like(r), np.ones_like(r))
    return symbolic and close(values, ours) and bool(np.all(ours > 0)) and ours[-1] < 1e-80


@check("1.npo-without-one", 1, "Eq. 3",
       "deleting the '1+' in Eq. 3 leaves (2/beta) log (pi/pi_ref)^beta = 2 L_GA - 2 E log pi_ref",
       "expand_log then simplify; objectives.ga_loss and npo_loss at random points",
       show=lambda: [("without the 1", latex_eq((2 / beta) * sp.log((pi / pi_ref) ** beta),
                                                2 * sp.log(pi) - 2 * sp.log(pi_ref)))])
def check_npo_without_one(ratio_form=None) -> bool:
    rf = npo_loss_ratio() if ratio_form is None else ratio_form
    dropped = rf.replace(lambda e: e.is_Add and 1 in e.args, lambda e: e - 1)
    symbolic = equal(dropped, 2 * sp.log(pi) - 2 * sp.log(pi_ref))
    r = rng(3)
    lp, lr = r.uniform(-10, 0, 16), r.uniform(-10, 0, 16)
    f = sp.lambdify((logp, logp_ref, beta), dropped.subs({pi: sp.exp(logp), pi_ref: sp.exp(logp_ref)}))
    # Large beta R: softplus(beta R) ~ beta R, so NPO itself approaches the '1'-less loss there.
    big = ob.npo_loss(lp + 40.0, lr, 5.0)
    return symbolic and close(np.mean(f(lp, lr, 0.7)), 2 * ob.ga_loss(lp) - 2 * np.mean(lr)) and \
        close(big, np.mean(f(lp + 40.0, lr, 5.0)), rtol=1e-6)


# ---- item 2: the gradient weight, Eqs. 4-5 --------------------------------------------------------

@check("2.weight-is-gradient", 2, "Eqs. 4-5",
       "grad L_NPO = W grad log pi with W = dL/dR = 2 sigma(beta R) = 2 pi^beta / (pi^beta + pi_ref^beta)",
       "diff(L_NPO, R) - W simplifies to 0, both forms; torch float64 autograd of objectives.npo_loss",
       show=lambda: [("weight", latex_eq(W_SYM, npo_weight())),
                     ("ratio form", latex_eq(W_SYM, npo_weight_ratio())),
                     ("from Eq. 3", latex_eq(sp.Derivative(L_NPO, R), npo_weight_derived()))])
def check_gradient_weight(weight=None) -> bool:
    w = npo_weight() if weight is None else weight
    symbolic = equal(sp.diff(npo_loss_logsigmoid(), R), w) and \
        equal(w.subs(R, sp.log(pi / pi_ref)), npo_weight_ratio())
    gen = torch.Generator().manual_seed(2)
    lp = (-10 * torch.rand(32, generator=gen, dtype=torch.float64)).requires_grad_(True)
    lr = -10 * torch.rand(32, generator=gen, dtype=torch.float64)
    ok = symbolic
    for b in (0.1, 1.0, 4.0):
        (grad,) = torch.autograd.grad(ob.npo_loss(lp, lr, b), lp)
        r_np = (lp - lr).detach().numpy()
        ours = sp.lambdify((R, beta), w, "numpy")(r_np, b)
        ok = ok and close(32 * grad.numpy(), ours) and close(ob.npo_weight(lp.detach().numpy(), lr.numpy(), b), ours)
    return ok


@check("2.weight-range", 2, "Eqs. 4-5",
       "W = 1 at theta = theta_ref (NPO and GA start with the same gradient) and 0 < W < 2",
       "W(R=0) = 1, limits 0 and 2 at R -> -oo, +oo, dW/dR > 0 (sympy); objectives.npo_weight on 64 random R",
       show=lambda: [("at the reference", tex(r"W|_{R=0}", npo_weight().subs(R, 0))),
                     ("slope", latex_eq(sp.Derivative(W_SYM, R), sp.simplify(sp.diff(npo_weight(), R))))])
def check_weight_range(weight=None) -> bool:
    w = npo_weight() if weight is None else weight
    symbolic = sp.simplify(w.subs(R, 0)) == 1 and sp.limit(w, R, -sp.oo) == 0 and \
        sp.limit(w, R, sp.oo) == 2 and sp.diff(w, R).is_positive is True
    r = rng(4).uniform(-60, 60, 64)
    ours = sp.lambdify((R, beta), w, "numpy")(r, 0.5)
    theirs = ob.npo_weight(r, np.zeros_like(r), 0.5)
    at_ref = ob.npo_weight(r, r, 0.5)
    return symbolic and close(ours, theirs) and bool(np.all((theirs > 0) & (theirs < 2))) and close(at_ref, 1.0)


@check("2.weight-series", 2, "Eqs. 4-5",
       "W = 1 + beta R / 2 + O(beta^3) (no beta^2 term), so W -> 1 and NPO -> GA as beta -> 0",
       "series(W - expansion, beta, 0, 3) = 0; observed error order >= 2.9 from objectives.npo_weight",
       show=lambda: [("series", latex_eq(W_SYM, sp.series(npo_weight(), beta, 0, 5)))])
def check_weight_series(weight=None, expansion=None) -> bool:
    w = npo_weight() if weight is None else weight
    e = weight_expansion() if expansion is None else expansion
    symbolic = sp.series(w - e, beta, 0, 3).removeO() == 0
    f = sp.lambdify((R, beta), e, "numpy")
    orders = [_order_of_error(lambda h, r=r: ob.npo_weight(r, 0.0, h) - f(r, h), 0.02)
              for r in rng(5).uniform(-3, 3, 8)]
    return symbolic and min(orders) > 2.9


# ---- item 3: Proposition 1 ------------------------------------------------------------------------

@check("3.prop1-limit", 3, "Prop. 1",
       "lim_{beta->0} [L_NPO - (2/beta) log 2] = L_GA - E log pi_ref (per sample: R)",
       "sympy limit; objectives.npo_loss at beta = 1e-8 against ga_loss - mean(logp_ref)",
       show=lambda: [("limit", latex_eq(sp.Limit(L_NPO - 2 * sp.log(2) / beta, beta, 0, "+"), prop1_limit()))])
def check_prop1_limit(limit=None) -> bool:
    lim = R if limit is None else limit
    symbolic = equal(prop1_limit(), lim)
    r = rng(6)
    lp, lr = r.uniform(-10, 0, 8), r.uniform(-10, 0, 8)
    b = 1e-8
    shifted = ob.npo_loss(lp, lr, b) - (2 / b) * np.log(2)
    candidate = np.mean(sp.lambdify(R, lim, "numpy")(lp - lr) * np.ones_like(lp))
    return symbolic and close(shifted, candidate, atol=1e-5) and \
        close(shifted, ob.ga_loss(lp) - np.mean(lr), atol=1e-5)


@check("3.prop1-gradient-limit", 3, "Prop. 1",
       "lim_{beta->0} grad L_NPO = grad L_GA (the weight tends to 1)",
       "sympy limit of W; torch autograd of objectives.npo_loss (beta = 1e-7) vs ga_loss on a logistic model",
       show=lambda: [("weight limit", latex_eq(sp.Limit(W_SYM, beta, 0, "+"), sp.limit(npo_weight(), beta, 0, "+")))])
def check_prop1_gradient_limit(limit_weight=None) -> bool:
    lim = sp.Integer(1) if limit_weight is None else sp.sympify(limit_weight)
    symbolic = equal(sp.limit(npo_weight(), beta, 0, "+"), lim)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    sign = 2.0 * torch.randint(0, 2, (8,), generator=gen).double() - 1.0
    theta0 = torch.randn(5, generator=gen, dtype=torch.float64)
    theta = (theta0 + torch.randn(5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    logp_of = lambda th: torch.nn.functional.logsigmoid(sign * (x @ th))  # noqa: E731
    (g_npo,) = torch.autograd.grad(ob.npo_loss(logp_of(theta), logp_of(theta0).detach(), 1e-7), theta)
    (g_ga,) = torch.autograd.grad(ob.ga_loss(logp_of(theta)), theta)
    return symbolic and close(g_npo.numpy(), float(lim) * g_ga.numpy(), rtol=1e-5, atol=1e-8)


@check("3.prop1-series", 3, "Prop. 1",
       "L_NPO - (2/beta) log 2 = R + beta R^2/4 - beta^3 R^4/96 + O(beta^4)",
       "series(lhs - expansion, beta, 0, 4) = 0; observed error order >= 3.9 with mpmath at 40 digits",
       show=lambda: [("series", latex_eq(L_NPO - 2 * sp.log(2) / beta, sp.series(prop1_shifted_loss(), beta, 0, 6)))])
def check_prop1_series(expansion=None) -> bool:
    e = prop1_expansion() if expansion is None else expansion
    symbolic = sp.series(prop1_shifted_loss() - e, beta, 0, 4).removeO() == 0
    f = sp.lambdify((R, beta), e, "mpmath")
    with mpmath.workdps(40):
        def error(h, r):
            exact = (2 / h) * mpmath.log((1 + mpmath.exp(h * r)) / 2)
            return exact - f(r, h)
        orders = [_order_of_error(lambda h, r=mpmath.mpf(r): error(h, r), mpmath.mpf("0.01"))
                  for r in rng(7).uniform(-3, 3, 6)]
    return symbolic and min(orders) > 3.9
