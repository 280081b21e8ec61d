"""Item 6, explicit: exactly orthogonal inputs, where every sample follows its own ODE.

With Gamma diagonal the logit changes decouple. For one sample with margin m = m0 - b (log-odds of
its forget label), p = sigma(m) and gain g = gamma_ii, gradient flow gives
    db/dt = eta0 g (1 - p) W,   W = 1 (GA),   W = 2 sigma(beta (log p - log p0)) (NPO).
Separating variables proves theory/predictions.py:
    GA : g eta0 t = b + e^{m0} (1 - e^{-b}),  so b(t) = g eta0 t - e^{m0} + e^{m0 - b} -> g eta0 t - e^{m0};
    NPO: 2 g eta0 t = b + e^{m0}(1 - e^{-b}) + p0^beta I(b), and b(t) = (1/beta) log(1 + K t) + o(1)
         with K = lim_{b->oo} beta e^{beta b} db/dt = 2 beta g eta0 (1 - p0)^(-beta).
"""
from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.special import lambertw

from .. import predictions as pr
from ._tools import beta, close, equal, eta, eta0, g, is_zero, latex_eq, m0, n_f, rng, sigmoid, t
from .registry import check

b = sp.Symbol("b", nonnegative=True)
u = sp.Symbol("u", real=True)
z = sp.Symbol("z", positive=True)  # e^{-b}, -> 0+ as b -> oo


def margin_prob(b=b):
    """p = sigma(m0 - b): the forget-label probability after a divergence b."""
    return sigmoid(m0 - b)


def ga_rhs(b=b):
    return eta0 * g * (1 - margin_prob(b))


def npo_rhs(b=b):
    p, p0 = margin_prob(b), margin_prob(0)
    return eta0 * g * (1 - p) * 2 * p ** beta / (p ** beta + p0 ** beta)


def ga_time_of_b():
    """t(b) for GA, from integrating dt = db / rhs(b) (separation of variables)."""
    return sp.integrate(1 / ga_rhs(u), (u, 0, b))


def npo_time_of_b():
    """t(b) for NPO: (b + e^{m0}(1 - e^{-b}) + p0^beta I(b)) / (2 g eta0), I left as an integral."""
    integral = sp.Integral(sp.exp(u) * (1 + sp.exp(-u)) ** (beta + 1), (u, m0 - b, m0))
    return (b + sp.exp(m0) * (1 - sp.exp(-b)) + margin_prob(0) ** beta * integral) / (2 * g * eta0)


def ga_offset():
    """The constant in b(t) = g eta0 t + offset + o(1)."""
    return -sp.exp(m0)


def npo_constant():
    """K in b(t) = (1/beta) log(1 + K t) + o(1)."""
    return 2 * beta * g * eta0 * (1 - margin_prob(0)) ** (-beta)


def ga_leading(offset=None):
    return g * eta0 * t + (ga_offset() if offset is None else offset)


def npo_leading(constant=None):
    return sp.log(1 + (npo_constant() if constant is None else constant) * t) / beta


def _to_predictions_args(e0, n=7):
    """predictions.* take (eta, n_forget); eta0 = eta / n_forget."""
    return e0 * n, n


@check("6.orthogonal-ga", 6, "Thm 2, orthogonal inputs",
       "GA flow db/dt = g eta0 (1 - sigma(m0 - b)), b(0) = 0: g eta0 t = b + e^{m0}(1 - e^{-b}) exactly, "
       "b(t) = g eta0 t - e^{m0} + W_0(e^{m0 + e^{m0} - g eta0 t}) and b(t) - (g eta0 t - e^{m0}) -> 0",
       "integrate 1/rhs and compare; limit of g eta0 t(b) - b; dsolve's general solution; "
       "predictions.flow_logit_change / ga_logit_change vs the Lambert-W solution and solve_ivp",
       show=lambda: [("ODE", latex_eq(sp.Derivative(sp.Symbol("b"), t), ga_rhs())),
                     ("separated", latex_eq(g * eta0 * t, sp.simplify(g * eta0 * ga_time_of_b()))),
                     ("exact", latex_eq(sp.Symbol("b(t)"), g * eta0 * t - sp.exp(m0)
                                        + sp.LambertW(sp.exp(m0 + sp.exp(m0) - g * eta0 * t)))),
                     ("leading order", latex_eq(sp.Symbol("b(t)"), ga_leading()))])
def check_orthogonal_ga(offset=None) -> bool:
    off = ga_offset() if offset is None else offset
    t_of_b = ga_time_of_b()
    symbolic = equal(g * eta0 * t_of_b, b + sp.exp(m0) * (1 - sp.exp(-b))) and \
        sp.limit(g * eta0 * t_of_b - b, b, sp.oo) == -off
    bf = sp.Function("b")
    general = sp.dsolve(sp.Eq(bf(t).diff(t), ga_rhs(bf(t))), bf(t)).rhs
    # dsolve gives C1 + g eta0 t + W(e^{m0 - C1 - g eta0 t}): the offset is C1 once b(0) = 0 fixes it.
    (c1,) = general.free_symbols - {t, m0, g, eta0}
    structural = is_zero(general.subs(c1, off) - (g * eta0 * t + off + sp.LambertW(sp.exp(m0 - off - g * eta0 * t))))
    lead = sp.lambdify((t, g, eta0, m0), ga_leading(off), "numpy")
    ok = symbolic and structural
    for m, gg, e0 in rng(40).uniform([-2, 0.5, 0.001], [3, 2, 0.05], (5, 3)):
        ts = np.array([0.0, 10.0, 1e2, 1e3, 1e4]) / e0
        exact = gg * e0 * ts - np.exp(m) + np.real(lambertw(np.exp(m + np.exp(m) - gg * e0 * ts)))
        eta_, n = _to_predictions_args(e0)
        ode = solve_ivp(lambda _, y: [gg * e0 * np.exp(-np.logaddexp(0, m - y[0]))], (0, ts[-1]), [0.0],
                        t_eval=ts, rtol=1e-10, atol=1e-10).y[0]
        ok = ok and close(exact[0], 0.0, atol=1e-12) and close(ode, exact, rtol=1e-6, atol=1e-7) and \
            close(pr.flow_logit_change(ts, eta_, n, [m], gain=gg)[:, 0], exact, rtol=1e-5, atol=1e-5) and \
            close(pr.ga_logit_change(ts, eta_, n, [m], gain=gg)[:, 0], lead(ts, gg, e0, m), rtol=1e-12) and \
            close(lead(ts[-1], gg, e0, m), exact[-1], rtol=1e-12, atol=1e-9)
    return ok


@check("6.orthogonal-npo", 6, "Thm 2, orthogonal inputs",
       "NPO flow db/dt = 2 g eta0 (1-p) p^beta / (p^beta + p0^beta): 2 g eta0 t = b + e^{m0}(1 - e^{-b}) + p0^beta I(b), "
       "I(b) = int_{m0-b}^{m0} e^u (1 + e^{-u})^{beta+1} du, and b(t) = (1/beta) log(1 + 2 beta g eta0 (1-p0)^{-beta} t) + o(1)",
       "d t(b)/db * rhs(b) - 1 simplifies to 0; K = limit_{z=e^{-b}->0} beta e^{beta b} rhs; "
       "solve_ivp vs predictions.flow_logit_change, and vs npo_logit_change at t = 1e9 / eta0",
       show=lambda: [("ODE", latex_eq(sp.Derivative(sp.Symbol("b"), t), npo_rhs())),
                     ("separated", latex_eq(t, npo_time_of_b())),
                     ("constant", latex_eq(sp.Symbol("K"), npo_constant())),
                     ("leading order", latex_eq(sp.Symbol("b(t)"), npo_leading()))])
def check_orthogonal_npo(constant=None) -> bool:
    K = npo_constant() if constant is None else constant
    separated = is_zero(sp.diff(npo_time_of_b(), b) * npo_rhs() - 1) and npo_time_of_b().subs(b, 0).doit() == 0
    # L'Hopital: t(b) ~ e^{beta b} / K iff beta e^{beta b} rhs(b) -> K; write e^{-b} = z -> 0+.
    on_z = (beta * sp.exp(beta * b) * npo_rhs()).subs(b, -sp.log(z))
    # The limit comes out as ((e^{m0} + 1) e^{m0})^beta e^{-beta m0}; both bases are positive, so
    # splitting the power (force=True) is exact here.
    limit = sp.expand_power_base(sp.limit(sp.simplify(on_z), z, 0, "+"), force=True)
    symbolic = separated and equal(limit, K)
    lead = sp.lambdify((t, beta, g, eta0, m0), npo_leading(K), "numpy")
    ok = symbolic
    for m, bet, gg, e0 in rng(41).uniform([-2, 0.3, 0.5, 0.001], [3, 3, 2, 0.05], (4, 4)):
        rhs = sp.lambdify((b,), npo_rhs().subs({m0: m, beta: bet, g: gg, eta0: e0}), "numpy")
        # Integrate in s = log(1 + t) so that long horizons cost few steps: db/ds = (1 + t) rhs(b).
        ts = np.array([10.0, 1e3, 1e5, 1e7, 1e9]) / e0
        ode = solve_ivp(lambda s, y: [np.exp(s) * rhs(y[0])], (0, np.log1p(ts[-1])), [0.0],
                        t_eval=np.log1p(ts), rtol=1e-10, atol=1e-10, method="LSODA").y[0]
        eta_, n = _to_predictions_args(e0)
        flow = pr.flow_logit_change(ts[:3], eta_, n, [m], beta=bet, gain=gg)[:, 0]
        ours = lead(ts, bet, gg, e0, m)
        ok = ok and close(flow, ode[:3], rtol=1e-3, atol=1e-3) and \
            close(pr.npo_logit_change(ts, eta_, n, bet, [m], gain=gg)[:, 0], ours, rtol=1e-10) and \
            abs(ode[-1] - ours[-1]) < 1e-2
    return ok


@check("6.orthogonal-slopes", 6, "Thm 2, orthogonal inputs",
       "for n_f samples with any offsets, d||b_GA||/dt -> g eta / sqrt(n_f) and d||b_NPO||/d log t -> sqrt(n_f)/beta",
       "sympy limits for 3 samples with distinct constants and for n_f identical ones; "
       "predictions.ga_slope / npo_log_slope and finite differences of the predicted norms",
       show=lambda: [("GA slope", latex_eq(sp.Symbol(r"d\|b_{GA}\|_2/dt"), g * eta / sp.sqrt(n_f))),
                     ("NPO log-slope", latex_eq(sp.Symbol(r"d\|b_{NPO}\|_2/d\log t"), sp.sqrt(n_f) / beta))])
def check_orthogonal_slopes(ga_slope=None, npo_log_slope=None) -> bool:
    ga_slope = g * eta / sp.sqrt(n_f) if ga_slope is None else ga_slope
    npo_log_slope = sp.sqrt(n_f) / beta if npo_log_slope is None else npo_log_slope
    a = sp.symbols("a1:4", real=True)
    K = sp.symbols("K1:4", positive=True)
    k = g * eta0
    ga3 = sp.sqrt(sum((k * t + ai) ** 2 for ai in a))
    npo3 = sp.sqrt(sum((sp.log(1 + Ki * t) / beta) ** 2 for Ki in K))
    ga_n = sp.sqrt(n_f * (k * t + a[0]) ** 2)
    npo_n = sp.sqrt(n_f * (sp.log(1 + K[0] * t) / beta) ** 2)
    to_eta = {eta0: eta / n_f}
    symbolic = equal(sp.limit(sp.diff(ga3, t), t, sp.oo), ga_slope.subs(n_f, 3).subs(eta, 3 * eta0)) and \
        equal(sp.limit(t * sp.diff(npo3, t), t, sp.oo), npo_log_slope.subs(n_f, 3)) and \
        equal(sp.limit(sp.diff(ga_n, t), t, sp.oo).subs(to_eta), ga_slope) and \
        equal(sp.limit(t * sp.diff(npo_n, t), t, sp.oo), npo_log_slope)
    fg = sp.lambdify((g, eta, n_f), ga_slope, "numpy")
    fn = sp.lambdify((n_f, beta), npo_log_slope, "numpy")
    ok = symbolic
    r = rng(42)
    for _ in range(4):
        n, et, bet, gg = int(r.integers(2, 50)), r.uniform(0.01, 1), r.uniform(0.2, 3), r.uniform(0.5, 2)
        m = r.uniform(-2, 3, n)
        t1 = 1e12
        ga_norm = lambda tt: np.linalg.norm(pr.ga_logit_change([tt], et, n, m, gain=gg))  # noqa: E731
        npo_norm = lambda tt: np.linalg.norm(pr.npo_logit_change([tt], et, n, bet, m, gain=gg))  # noqa: E731
        ok = ok and close(fg(gg, et, n), pr.ga_slope(et, n, gain=gg)) and close(fn(n, bet), pr.npo_log_slope(n, bet)) and \
            close((ga_norm(2e6) - ga_norm(1e6)) / 1e6, fg(gg, et, n), rtol=1e-6) and \
            close(npo_norm(np.e * t1) - npo_norm(t1), fn(n, bet), rtol=2e-2)
    return ok
