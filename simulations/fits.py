"""Least-squares fits that turn recorded trajectories into rates, and threshold-crossing times.

* GA:  ||b|| = slope * t + c          (linear divergence)
* NPO: ||b|| = slope * log t + c      (logarithmic divergence)
* scaling laws: log(rate) = exponent * log(parameter) + c
Fits use the recorded points with t >= t_min only: the rates are asymptotic statements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import linregress


@dataclass(frozen=True)
class LinearFit:
    slope: float
    intercept: float
    r2: float
    n_points: int

    def as_dict(self) -> dict:
        return asdict(self)


def linear_fit(x, y) -> LinearFit:
    """Ordinary least squares y = slope x + intercept (``scipy.stats.linregress``), with R^2.

    A constant y is fitted exactly (R^2 = 1; linregress would give r = nan there).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("a linear fit needs at least two distinct x values")
    fit = linregress(x, y)
    r2 = fit.rvalue ** 2 if np.ptp(y) > 0 else 1.0
    return LinearFit(float(fit.slope), float(fit.intercept), float(r2), int(x.size))


def _window(steps, norm, t_min):
    steps, norm = np.asarray(steps, np.float64), np.asarray(norm, np.float64)
    keep = steps >= max(t_min, 1.0)
    return steps[keep], norm[keep]


def fit_linear_in_t(steps, norm, t_min: float) -> LinearFit:
    """GA's law: ||b|| against t."""
    t, y = _window(steps, norm, t_min)
    return linear_fit(t, y)


def fit_linear_in_log_t(steps, norm, t_min: float) -> LinearFit:
    """NPO's law: ||b|| against log t (natural log, as in theory.predictions)."""
    t, y = _window(steps, norm, t_min)
    return linear_fit(np.log(t), y)


def power_law(x, y) -> LinearFit:
    """y ~ x^exponent: a linear fit of log y on log x (slope = exponent)."""
    return linear_fit(np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64)))


def crossing_steps(steps, norm, thresholds) -> np.ndarray:
    """First (interpolated) step at which a non-decreasing ||b|| reaches each threshold; nan if never.

    Interpolates linearly in log t between the log-spaced records, where both laws are smooth.
    """
    steps, norm = np.asarray(steps, np.float64), np.asarray(norm, np.float64)
    norm = np.maximum.accumulate(norm)  # guard against rounding-level dips
    out = np.full(len(thresholds), np.nan)
    for k, tau in enumerate(thresholds):
        hit = np.flatnonzero(norm >= tau)
        if hit.size == 0:
            continue
        j = hit[0]
        if j == 0 or steps[j - 1] <= 0:
            out[k] = steps[j]
            continue
        lo, hi = np.log(steps[j - 1]), np.log(steps[j])
        frac = (tau - norm[j - 1]) / (norm[j] - norm[j - 1])
        out[k] = np.exp(lo + frac * (hi - lo))
    return out
