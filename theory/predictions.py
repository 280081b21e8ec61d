"""Theorem 2's rates with every constant explicit: the predictions simulations are compared against.

Setting (paper-digest section 2): full-batch GD with step eta on the *average* loss over n_f forget
samples, so each sample moves with eta0 = eta / n_f. For exactly orthogonal inputs the per-sample
logit changes decouple. Write m for a sample's margin (log-odds of its forget label, m0 at the
start), p = sigma(m), b = m0 - m >= 0 for the divergence. Each sample then follows

    db/dt = eta0 * g * (1 - p) * W,      W = 1 (GA),   W = 2 sigma(beta R), R = log p - log p0 (NPO)

with gain g = gamma_ii = |x_i|^2 for the logistic model and g = 1 + |q|^2 for the K-class tabular
model with free logits (q = the non-forget class distribution; |q|^2 = 1 when K = 2, and GA drives
q one-hot, so g -> 2). Separating variables gives t as an explicit function of b:

    GA : g eta0 t = b + e^{m0} (1 - e^{-b})
    NPO: 2 g eta0 t = b + e^{m0} (1 - e^{-b}) + p0^beta * I(b),
         I(b) = int_{m0-b}^{m0} e^u (1 + e^{-u})^(beta+1) du,

and to leading order as t -> infinity (every constant explicit):

    GA : b(t) = g eta0 t - e^{m0} + o(1)
    NPO: b(t) = (1/beta) log(1 + 2 beta g eta0 (1 - p0)^(-beta) t) + o(1).

Hence ||b||_2 grows with slope g eta / sqrt(n_f) in t (GA) and sqrt(n_f)/beta in log t (NPO).
``theory.derivations`` derives these symbolically (dsolve, series) and checks them; this module is
their numeric form.
"""
from __future__ import annotations

import numpy as np
from scipy.integrate import cumulative_simpson

from .objectives import softplus


def _as_samples(margin0):
    return np.atleast_1d(np.asarray(margin0, dtype=np.float64))


def _as_times(t):
    return np.atleast_1d(np.asarray(t, dtype=np.float64))


# ---- leading-order asymptotics --------------------------------------------------------------------

def ga_logit_change(t, eta: float, n_forget: int, margin0, gain=1.0):
    """Leading-order GA trajectory b_i(t) = g eta0 t - e^{m0_i}; shape (len(t), n)."""
    t, m0 = _as_times(t)[:, None], _as_samples(margin0)[None, :]
    return gain * (eta / n_forget) * t - np.exp(m0)


def npo_logit_change(t, eta: float, n_forget: int, beta: float, margin0, gain=1.0):
    """Leading-order NPO trajectory (1/beta) log(1 + 2 beta g eta0 (1-p0)^(-beta) t); shape (len(t), n)."""
    t, m0 = _as_times(t)[:, None], _as_samples(margin0)[None, :]
    log_one_minus_p0 = -softplus(m0)
    with np.errstate(divide="ignore"):
        log_arg = np.log(2.0 * beta * gain * (eta / n_forget) * t) - beta * log_one_minus_p0
    return np.logaddexp(0.0, log_arg) / beta  # log1p(exp(.)) without overflow


def ga_slope(eta: float, n_forget: int, gain=1.0) -> float:
    """d||b||/dt for GA: g eta n_f^(-1/2)."""
    return gain * eta / np.sqrt(n_forget)


def npo_log_slope(n_forget: int, beta: float) -> float:
    """d||b|| / d log t for NPO: sqrt(n_f) / beta (independent of eta, the gain and the start)."""
    return np.sqrt(n_forget) / beta


# ---- exact continuous-time trajectories (gradient flow of the decoupled system) -------------------

def _time_of_b(b, m0: float, beta: float | None, eta0: float, gain: float):
    """t(b) from the separated ODE above; b is an increasing grid starting at 0."""
    base = b + np.exp(m0) * (-np.expm1(-b))
    if beta is None:
        return base / (gain * eta0)
    u = m0 - b
    # p0^beta e^u (1 + e^{-u})^(beta+1), in logs for range safety.
    log_integrand = -beta * softplus(-m0) + u + (beta + 1.0) * softplus(-u)
    integral = cumulative_simpson(np.exp(log_integrand), x=b, initial=0.0)
    return (base + integral) / (2.0 * gain * eta0)


def _b_grid(b_max: float, grid: int, b_curved: float = 40.0):
    """Grid for t(b): uniform up to ``b_curved``, where the e^{-b} terms bend t(b), geometric beyond.

    A uniform grid over a long GA horizon (b_max ~ 1e4) would put only a few points where t(b)
    curves and make the interpolated early trajectory wrong by O(0.1).
    """
    if b_max <= b_curved:
        return np.linspace(0.0, b_max, grid)
    near = np.linspace(0.0, b_curved, grid // 2)
    return np.concatenate([near, np.geomspace(b_curved, b_max, grid - grid // 2 + 1)[1:]])


def flow_logit_change(t, eta: float, n_forget: int, margin0, beta: float | None = None,
                      gain=1.0, grid: int = 20001):
    """Exact gradient-flow trajectory b_i(t) (GA if beta is None, else NPO); shape (len(t), n).

    Inverts t(b) by monotone interpolation in log-space on a grid reaching past the largest t.
    """
    t, m0s = _as_times(t), _as_samples(margin0)
    eta0, t_max = eta / n_forget, max(float(t.max()), 1.0)
    out = np.empty((t.size, m0s.size))
    for i, m0 in enumerate(m0s):
        if beta is None:
            lead = ga_logit_change([t_max], eta, n_forget, [m0], gain)
        else:
            lead = npo_logit_change([t_max], eta, n_forget, beta, [m0], gain)
        b = _b_grid(1.5 * max(float(lead[0, 0]), 0.0) + 10.0, grid)
        out[:, i] = np.interp(t, _time_of_b(b, m0, beta, eta0, gain), b)
    return out
