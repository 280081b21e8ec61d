"""Item 7: the K-class softmax model of Sec. 2.1 and its tabular (free-logit) version.

pi_theta(.|x) = softmax(theta x), theta in R^{K x d}: grad_{theta_l} log pi(y|x) = (1{y=l} - softmax_l) x.
For an already-unlearned sample (softmax_y -> 0) GA's gradient tends to x, of constant scale, so GA
keeps pushing linearly; NPO's gradient is W (1 - softmax_y) x with W -> 0.

Tabular model (one free logit vector z in R^K per sample, forget label index 0): with p = softmax(z)_0,
the non-forget class distribution q_k = p_k / (1 - p) and the margin m = log(p / (1 - p)), gradient
flow dz/dt = -eta0 grad_z loss gives
    dm/dt = -eta0 W (1 - p)(1 + |q|^2),    K/(K-1) <= 1 + |q|^2 <= 2,
i.e. the orthogonal-input ODE of theory/predictions.py with gain g = 1 + |q|^2 (g = 2 when K = 2), so
b = m0 - m is bracketed by the predicted trajectories with g = K/(K-1) and g = 2.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from .. import objectives as ob
from .. import predictions as pr
from ._tools import beta, close, equal, eta0, is_zero, latex_eq, rng, sigmoid
from .registry import check

K_SYM, D_SYM = 3, 2
theta_mat = sp.Matrix(K_SYM, D_SYM, sp.symbols("theta1:4_1:3", real=True))
x_col = sp.Matrix(sp.symbols("x1:3", real=True))
z_vec = sp.symbols("z1:4", real=True)
P, Q2, W_ = sp.symbols("p |q|^2 W", positive=True)


def softmax_logprob(y: int, theta=theta_mat, x=x_col):
    logits = theta * x
    return logits[y] - sp.log(sum(sp.exp(v) for v in logits))


def softmax_gradient(y: int, l: int, theta=theta_mat, x=x_col):
    """grad_{theta_l} log pi(y|x) = (1{y=l} - softmax_l(theta x)) x."""
    logits = theta * x
    soft = sp.exp(logits[l]) / sum(sp.exp(v) for v in logits)
    return (int(y == l) - soft) * x


def margin_ode():
    """dm/dt for the tabular model, in terms of p, |q|^2 and the weight W (W = 1 for GA)."""
    return -eta0 * W_ * (1 - P) * (1 + Q2)


def gain_bounds(K):
    """(min, max) of g = 1 + |q|^2 over distributions q on K - 1 classes."""
    return 1 + sp.Rational(1, K - 1), sp.Integer(2)


@check("7.softmax-gradient", 7, "Sec. 2.1",
       "K-class softmax model: grad_{theta_l} log pi(y|x) = (1{y=l} - softmax_l(theta x)) x",
       "diff of z_y - logsumexp(z) minus the formula simplifies to 0 for K = 3, d = 2, all (y, l); torch autograd",
       show=lambda: [("gradient", r"\nabla_{\theta_l} \log \pi_\theta(y|x) = (\mathbb{1}\{y = l\} - \mathrm{softmax}_l(\theta x))\, x")])
def check_softmax_gradient(gradient=None) -> bool:
    grad_fn = softmax_gradient if gradient is None else gradient
    ok = True
    r = rng(50)
    th_np, x_np = r.normal(size=(K_SYM, D_SYM)), r.normal(size=D_SYM)
    subs = {**dict(zip(theta_mat, th_np.ravel())), **dict(zip(x_col, x_np))}
    for y in range(K_SYM):
        lp = softmax_logprob(y)
        th = torch.tensor(th_np, requires_grad=True)
        (auto,) = torch.autograd.grad(torch.log_softmax(th @ torch.tensor(x_np), 0)[y], th)
        for l in range(K_SYM):
            formula = grad_fn(y, l)
            ok = ok and all(is_zero(sp.diff(lp, theta_mat[l, j]) - formula[j]) for j in range(D_SYM))
            ok = ok and close(np.array([float(v.subs(subs)) for v in formula]), auto[l].numpy(), rtol=1e-10)
    return ok


@check("7.unlearned-sample", 7, "Sec. 2.1",
       "for an already-unlearned sample (softmax_y -> 0) GA's gradient grad_{theta_y} L_GA,i -> x_i (constant scale), "
       "NPO's W (1 - softmax_y) x_i -> 0; GA's logit then falls linearly, NPO's barely moves",
       "sympy limits z_y -> -oo; torch autograd of objectives.ga_loss / npo_loss on log_softmax, and 100 GD steps",
       show=lambda: [("GA", latex_eq(sp.Limit(sp.Symbol(r"\nabla_{\theta_y} \mathcal{L}_{\mathrm{GA},i}"), sp.Symbol("z_y"), -sp.oo),
                                     sp.Symbol("x_i"))),
                     ("NPO", latex_eq(sp.Limit(sp.Symbol(r"\nabla_{\theta_y} \mathcal{L}_{\mathrm{NPO},i}"), sp.Symbol("z_y"), -sp.oo), 0))])
def check_unlearned_sample(ga_limit=None) -> bool:
    ga_limit = x_col if ga_limit is None else ga_limit
    z = z_vec
    soft0 = sp.exp(z[0]) / sum(sp.exp(v) for v in z)
    p_ref = sp.Symbol("p_ref", positive=True)
    w_npo = 2 * sigmoid(beta * (sp.log(soft0) - sp.log(p_ref)))
    ga_grad = (1 - soft0) * x_col
    symbolic = all(equal(sp.limit(ga_grad[j], z[0], -sp.oo), ga_limit[j]) for j in range(D_SYM)) and \
        sp.limit(sp.simplify(w_npo), z[0], -sp.oo) == 0
    r = rng(51)
    x = torch.tensor(r.normal(size=D_SYM))
    theta0 = torch.tensor(r.normal(size=(3, D_SYM)))
    theta0[0] -= 12.0 * x / x.dot(x)  # forget class 0 already has a logit ~12 below the others
    lim = sp.lambdify(list(x_col), list(ga_limit), "numpy")
    ref = torch.log_softmax(theta0 @ x, 0)[0].detach() + 12.0  # the reference model still knew the sample
    ok = symbolic
    thetas = {"ga": theta0.clone(), "npo": theta0.clone()}
    for step in range(100):
        for name, th in thetas.items():
            th = th.clone().requires_grad_(True)
            logp = torch.log_softmax(th @ x, 0)[:1]
            loss = ob.ga_loss(logp) if name == "ga" else ob.npo_loss(logp, ref[None], 1.0)
            (grad,) = torch.autograd.grad(loss, th)
            if step == 0:
                expected = np.asarray(lim(*x.numpy()), dtype=np.float64) if name == "ga" else np.zeros(D_SYM)
                ok = ok and close(grad[0].numpy(), expected, rtol=1e-4, atol=1e-4)
            thetas[name] = (th - 0.2 * grad).detach()
    drop = {k: float((theta0 @ x)[0] - (v @ x)[0]) for k, v in thetas.items()}
    # GA: 100 steps of size 0.2 with gradient ~ x on the forget row lower its logit by ~ 20 |x|^2 (linear).
    return ok and close(drop["ga"], 20.0 * float(x.dot(x)), rtol=1e-3) and drop["npo"] < 1e-3


def _tabular_margin_rate(z_np, beta_, weight_ref):
    """dm/dt from torch autograd for free logits z (forget index 0), and p, |q|^2, W."""
    z = torch.tensor(z_np, requires_grad=True)
    logp = torch.log_softmax(z, 0)[:1]
    loss = ob.ga_loss(logp) if beta_ is None else ob.npo_loss(logp, weight_ref, beta_)
    (grad,) = torch.autograd.grad(loss, z)
    zz = torch.tensor(z_np, requires_grad=True)
    margin = zz[0] - torch.logsumexp(zz[1:], 0)
    (dm_dz,) = torch.autograd.grad(margin, zz)
    rate = float(dm_dz @ (-grad))  # eta0 = 1
    p = np.exp(logp.item())
    q = np.exp(z_np[1:] - np.logaddexp.reduce(z_np[1:]))
    w = 1.0 if beta_ is None else float(ob.npo_weight(logp.detach(), weight_ref, beta_)[0])
    return rate, p, float(q @ q), w


@check("7.tabular-margin-ode", 7, "Sec. 2.1, tabular",
       "tabular softmax, free logits, forget label 0: dm/dt = -eta0 W (1 - p)(1 + |q|^2) for the margin m = log(p/(1-p)), "
       "q = non-forget class distribution, W = 1 (GA) or 2 sigma(beta R) (NPO)",
       "chain rule grad m . (e_0 - softmax) simplified for K = 3; torch autograd of objectives.ga_loss / npo_loss, K = 5, 20 points",
       show=lambda: [("margin ODE", latex_eq(sp.Derivative(sp.Symbol("m"), sp.Symbol("t")), margin_ode()))])
def check_tabular_margin_ode(rate=None) -> bool:
    rate = margin_ode() if rate is None else rate
    z = z_vec
    Z = sum(sp.exp(v) for v in z)
    p = [sp.exp(v) / Z for v in z]
    margin = z[0] - sp.log(sp.exp(z[1]) + sp.exp(z[2]))
    # GA flow on log p_0: dz/dt = -eta0 (e_0 - p); NPO multiplies by W.
    dm_dt = sum(sp.diff(margin, z[k]) * (-eta0) * W_ * ((1 if k == 0 else 0) - p[k]) for k in range(3))
    q = [p[k] / (1 - p[0]) for k in (1, 2)]
    symbolic = is_zero(dm_dt - rate.subs({P: p[0], Q2: q[0] ** 2 + q[1] ** 2}))
    f = sp.lambdify((eta0, W_, P, Q2), rate, "numpy")
    ok = symbolic
    r = rng(52)
    for k in range(20):
        z_np = r.normal(0, 3, 5)
        beta_ = None if k % 2 == 0 else float(r.uniform(0.2, 3))
        ref = torch.tensor([r.uniform(-3, 0)], dtype=torch.float64)
        auto, p_, q2, w = _tabular_margin_rate(z_np, beta_, ref)
        ok = ok and close(auto, f(1.0, w, p_, q2), rtol=1e-9)
    return ok


def _simulate_tabular(m0s, K, beta_, eta0_, steps, seed):
    """Discrete GD on free logits z (one row per sample, forget index 0) from margins m0s; returns b = m0 - m."""
    r = rng(seed)
    z = np.concatenate([np.zeros((len(m0s), 1)), r.normal(0, 1, (len(m0s), K - 1))], axis=1)
    z[:, 0] = m0s + np.logaddexp.reduce(z[:, 1:], axis=1)  # so the initial margin is m0
    logp0 = z[:, 0] - np.logaddexp.reduce(z, axis=1)
    for _ in range(steps):
        logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        w = 1.0 if beta_ is None else ob.npo_weight(logp[:, 0], logp0, beta_)
        grad = -np.exp(logp)
        grad[:, 0] += 1.0  # grad_z log p_0 = e_0 - softmax(z)
        z = z - eta0_ * np.broadcast_to(w, len(m0s))[:, None] * grad
    m = z[:, 0] - np.logaddexp.reduce(z[:, 1:], axis=1)
    q = np.exp(z[:, 1:] - np.logaddexp.reduce(z[:, 1:], axis=1, keepdims=True))
    return m0s - m, 1 + (q * q).sum(1)


@check("7.tabular-rates", 7, "Sec. 2.1, tabular",
       "the gain g = 1 + |q|^2 lies in [K/(K-1), 2] (g = 2 for K = 2), so the tabular GA/NPO divergence b = m0 - m is "
       "bracketed by the orthogonal-input trajectories of theory/predictions.py with g = K/(K-1) and g = 2: "
       "linear for GA (g -> 2 as q turns one-hot), logarithmic for NPO",
       "sum q^2 - 1/(K-1) = sum (q - 1/(K-1))^2 and 1 - sum q^2 = 2 sum_{i<j} q_i q_j (K = 4); 4000 GD steps of the "
       "tabular model (K = 4, 6 samples) inside predictions.flow_logit_change(gain=g_min / 2)",
       show=lambda: [("gain", r"\frac{K}{K-1} \le g = 1 + \|q\|_2^2 \le 2"),
                     ("GA, large t", r"\frac{K}{K-1}\eta_0 t - e^{m_0} \lesssim b_{GA}(t) \lesssim 2 \eta_0 t - e^{m_0}"),
                     ("NPO, large t", r"b_{NPO}(t) = \frac{1}{\beta}\log\left(1 + 2\beta g \eta_0 (1 - p_0)^{-\beta} t\right) + O(1)")])
def check_tabular_rates(bounds=None) -> bool:
    bounds = gain_bounds if bounds is None else bounds
    K = 4
    q = sp.symbols("q1:4", nonnegative=True)
    on_simplex = {q[2]: 1 - q[0] - q[1]}
    lo, hi = bounds(K)
    sum_sq = sum(v ** 2 for v in q)
    symbolic = sp.expand((sum_sq - (lo - 1) - sum((v - (lo - 1)) ** 2 for v in q)).subs(on_simplex)) == 0 and \
        sp.expand(sum(q) ** 2 - sum_sq - 2 * (q[0] * q[1] + q[0] * q[2] + q[1] * q[2])) == 0 and \
        (2 * (q[0] * q[1] + q[0] * q[2] + q[1] * q[2])).is_nonnegative is True and \
        1 + sum_sq.subs({v: sp.Rational(1, K - 1) for v in q}) == lo and 1 + sum_sq.subs({q[0]: 1, q[1]: 0, q[2]: 0}) == hi and \
        bounds(2)[0] == bounds(2)[1] == 2
    m0s = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
    e0, steps = 0.02, 4000
    ok = symbolic
    for beta_ in (None, 1.0):
        b, gains = _simulate_tabular(m0s, K, beta_, e0, steps, seed=53)
        lower = pr.flow_logit_change([steps], e0, 1, m0s, beta=beta_, gain=float(lo))[0]
        upper = pr.flow_logit_change([steps], e0, 1, m0s, beta=beta_, gain=float(hi))[0]
        ok = ok and bool(np.all((lower - 0.02 <= b) & (b <= upper + 0.02))) and \
            bool(np.all((gains >= float(lo) - 1e-12) & (gains <= float(hi) + 1e-12)))
        if beta_ is None:
            ok = ok and bool(np.all(gains > 1.9))  # GA sharpens q to one-hot: g -> 2
    return ok
