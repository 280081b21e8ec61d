"""Which law a divergence trajectory follows: linear |D| = a t + c, or logarithmic |D| = c log(1 + t/tau).

    fit = fit_laws(steps, values, t_min)   # {"law", "linear_r2", "log_r2", "linear_slope", "log_c", ...}

Theorem 2's rates are asymptotic: GA's drift grows like a t, NPO's like c log(1 + t/tau), which for
t >> tau is c log t - c log tau. Both laws are therefore fitted, by least squares, on the same late
records t >= t_min (default: the last decade, t >= T/10): |D| = a t + c against t, and
|D| = c log t + d against log t (tau = exp(-d/c)). Both are two-parameter straight-line fits on
the same points, so their R^2 compare directly; the law is the one with the higher R^2, unless
the growth exponent exceeds 1.5 ("superlinear": faster than either law). Over one
decade a line fits a logarithm with R^2 ~ 0.91 and vice versa, so clean data separate clearly.
``growth_exponent`` (slope of log|D| on log t over the same window) is a model-free witness:
1 for a line, ~1/log(t/tau) -> 0 for a logarithm. An early transient (e.g. GA's jump when the
answers' probabilities collapse) lies before the window and does not enter the fit.

Every straight-line fit is ``scipy.stats.linregress``, as in simulations/fits.py (the simulations'
fits; llm/ may not import simulations/, a sibling layer, so both call scipy rather than each other).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import linregress

__all__ = ["fit_laws", "line_fit", "growth_exponent", "crossing_step", "SUPERLINEAR"]

#: A growth exponent above this over the window is neither law: faster than linear (e.g. GA on an
#: LM, whose gradient grows as the forget answers' log-probs fall, until it overflows).
SUPERLINEAR = 1.5


def line_fit(x, y) -> tuple[float, float, float]:
    """Least squares y = slope x + intercept (``linregress``); (slope, intercept, R^2). A constant y
    is fitted exactly (R^2 = 1; linregress's r is nan there)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    fit = linregress(x, y)
    return float(fit.slope), float(fit.intercept), float(fit.rvalue ** 2) if np.ptp(y) > 0 else 1.0


def growth_exponent(t, y) -> float:
    """d log y / d log t over the given records (those with y > 0)."""
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    keep = (t > 0) & (y > 0)
    if np.count_nonzero(keep) < 2:
        return float("nan")
    return float(linregress(np.log(t[keep]), np.log(y[keep])).slope)


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


def fit_laws(t, y, t_min: float | None = None) -> dict:
    """Both laws fitted to |y| over the records with t >= t_min (default max(t)/10), and the verdict."""
    t, y = np.asarray(t, np.float64), np.abs(np.asarray(y, np.float64))
    t_min = float(t.max()) / 10 if t_min is None else float(t_min)
    keep = t >= max(t_min, 1.0)
    if np.count_nonzero(keep) < 3:
        raise ValueError(f"fewer than 3 records at t >= {t_min:g} to fit; lower the fit start or "
                         f"raise --per-decade")
    tw, yw = t[keep], y[keep]
    a, c, lin_r2 = line_fit(tw, yw)
    c_log, d, log_r2 = line_fit(np.log(tw), yw)
    tau = float(np.exp(-d / c_log)) if c_log > 0 and np.isfinite(-d / c_log) and -d / c_log < 700 \
        else float("nan")
    exponent = growth_exponent(tw, yw)
    law = "logarithmic" if log_r2 > lin_r2 else "linear"
    if exponent > SUPERLINEAR:
        law = "superlinear"
    return {"law": law, "t_min": float(tw.min()),
            "n_points": int(keep.sum()), "linear_r2": lin_r2, "linear_slope": a, "linear_intercept": c,
            "log_r2": log_r2, "log_c": c_log, "log_tau": tau, "growth_exponent": exponent}
