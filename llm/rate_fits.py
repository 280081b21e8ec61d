"""Which law a divergence trajectory follows: linear |D| = a t + c, or logarithmic |D| = c log(1 + t/tau).

    fit = fit_laws(steps, values)      # {"linear_r2", "log_r2", "law", "linear_slope", ...}

Theorem 2 says GA's drift from the initial model grows linearly in the step count and NPO's only
logarithmically. The logarithmic model contains a straight line through the origin as tau -> inf
(log(1 + t/tau) ~ t/tau), so tau is searched only up to a tenth of the horizon: a series that still
prefers a larger tau is a line, not a logarithm. ``growth_exponent`` (the slope of log|D| against
log t over the last decade) is a second, model-free witness: ~1 for a line, ~0 for a logarithm.

simulations/fits.py holds the fits of the logistic/tabular simulations; llm/ may not import
simulations/ (sibling layers), and the LLM needs the origin-anchored log law with a fitted time
scale tau, which the simulations' asymptotic fits do not, hence this small module.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fit_laws", "linear_fit", "log_fit", "growth_exponent", "crossing_step"]

TAU_GRID = 200          # log-spaced candidate time scales
MAX_TAU_FRACTION = 0.1  # tau <= horizon / 10: beyond that log(1 + t/tau) is a straight line


def _r2(y, pred) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / total if total > 0 else 1.0


def linear_fit(t, y) -> dict:
    """Least squares y = slope t + intercept."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    slope, intercept = np.polyfit(t, y, 1)
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": _r2(y, slope * t + intercept)}


def log_fit(t, y) -> dict:
    """Least squares y = c log(1 + t/tau): c in closed form for each tau on a log grid."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    horizon = float(t.max())
    positive = t[t > 0]
    lo = max(float(positive.min()) / 10 if positive.size else 1.0, 1e-3)
    best = None
    for tau in np.geomspace(lo, max(MAX_TAU_FRACTION * horizon, lo * 1.01), TAU_GRID):
        basis = np.log1p(t / tau)
        denom = float(basis @ basis)
        if denom == 0:
            continue
        c = float(basis @ y) / denom
        r2 = _r2(y, c * basis)
        if best is None or r2 > best["r2"]:
            best = {"c": c, "tau": float(tau), "r2": r2}
    return best


def growth_exponent(t, y) -> float:
    """d log y / d log t over the last decade of the records (needs y > 0 there)."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    keep = (t >= t.max() / 10) & (t > 0) & (y > 0)
    if np.count_nonzero(keep) < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[keep]), np.log(y[keep]), 1)[0])


def crossing_step(t, y, threshold: float) -> float:
    """First step at which y reaches ``threshold`` (linear interpolation between records); nan if never."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    hit = np.flatnonzero(y >= threshold)
    if hit.size == 0:
        return float("nan")
    j = hit[0]
    if j == 0:
        return float(t[0])
    frac = (threshold - y[j - 1]) / (y[j] - y[j - 1])
    return float(t[j - 1] + frac * (t[j] - t[j - 1]))


def fit_laws(t, y) -> dict:
    """Both laws fitted to |D| over the whole trajectory, and the verdict.

    law = "logarithmic" when the log model fits better (R^2) with tau inside its range, else "linear".
    """
    t, y = np.asarray(t, np.float64), np.abs(np.asarray(y, np.float64))
    if t.size < 3:
        raise ValueError("a law fit needs at least 3 recorded steps")
    lin, log = linear_fit(t, y), log_fit(t, y)
    at_edge = log["tau"] >= MAX_TAU_FRACTION * float(t.max()) * 0.999
    law = "logarithmic" if log["r2"] > lin["r2"] and not at_edge else "linear"
    return {"law": law, "linear_r2": lin["r2"], "linear_slope": lin["slope"],
            "linear_intercept": lin["intercept"], "log_r2": log["r2"], "log_c": log["c"],
            "log_tau": log["tau"], "growth_exponent": growth_exponent(t, y)}
