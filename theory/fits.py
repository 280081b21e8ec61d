"""Fitting Theorem 2's laws to recorded trajectories: one line fit, the two laws, one crossing rule.

    line_fit(x, y)                   # LinearFit(slope, intercept, r2, n_points)
    law_fit(t, y, "linear", t_min)   # GA's law y = a t + c; "logarithmic": NPO's y = c log t + d
    power_law(x, y)                  # y ~ x^k: slope of log y on log x (a growth or scaling exponent)
    fit_laws(t, y, t_min)            # both laws on |y|, and the verdict: linear / logarithmic / superlinear
    crossing_step(t, y, threshold)   # first step at which y reaches threshold

theory/predictions.py states the rates (GA: |D| ~ a t; NPO: |D| ~ c log(1 + t/tau), i.e.
c log t - c log tau for t >> tau); this module measures them, for the simulations
(simulations/rates.py) and for language models (llm/studies/collapse_rate.py) alike. The rates are
asymptotic, so the laws are fitted on the late records t >= t_min only (never t < 1: log t).

fit_laws fits both laws on the same records (default: the last decade, t >= max(t)/10), each a
two-parameter straight line (|y| on t, |y| on log t; tau = exp(-d/c)), so their R^2 compare
directly: the law is the one with the higher R^2, unless the growth exponent (slope of log|y| on
log t: 1 for a line, ~1/log(t/tau) -> 0 for a logarithm) exceeds SUPERLINEAR. Over one decade a
line fits a logarithm with R^2 ~ 0.91 and vice versa, so clean data separate clearly. An early
transient (GA's jump when an LM's answer probabilities collapse) lies before the window.

The crossing rule (steps to reach a threshold), one for every caller:
  the first step at which the running maximum of y reaches the threshold, linearly interpolated
  in log t between the two records that bracket it.
* Running maximum: the distance travelled so far, which is monotone even where the recorded value
  dips (rounding, or an optimiser's oscillation); its first crossing is the raw one, and the
  interpolation runs from the highest value reached before it, never from a dip.
* Log t: every caller records at log-spaced steps (simulations.trajectory.record_schedule, 40 per
  decade; llm.studies.collapse_rate.record_steps, 12 per decade), so neighbouring records are a fixed
  ratio apart, and NPO's law is a straight line in log t for t >> tau. On GA's line (a t) the
  interpolated step errs by < 0.5 % at 12 records a decade, by up to 6 % between the integer
  records 1, 2, 3 of the first decade.
* A threshold already reached at the first record gives that record's step; one crossed between
  step 0 and the next record gives that record's step (log 0 = -inf; steps are integers, and the
  callers record step 1 after step 0).
* Never reached: nan (written as null in JSON).
Every straight-line fit is scipy.stats.linregress.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import linregress

__all__ = ["LinearFit", "line_fit", "law_fit", "power_law", "fit_laws", "crossing_step", "SUPERLINEAR"]

#: A growth exponent above this over the window is neither law: faster than linear (e.g. GA on an
#: LM, whose gradient grows as the forget answers' log-probs fall, until it overflows).
SUPERLINEAR = 1.5


@dataclass(frozen=True)
class LinearFit:
    slope: float
    intercept: float
    r2: float
    n_points: int

    def as_dict(self) -> dict:
        return asdict(self)


def line_fit(x, y) -> LinearFit:
    """Least squares y = slope x + intercept, with R^2. A constant y is fitted exactly (R^2 = 1;
    linregress's r is nan there)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("a line fit needs at least two distinct x values")
    fit = linregress(x, y)
    r2 = fit.rvalue ** 2 if np.ptp(y) > 0 else 1.0
    return LinearFit(float(fit.slope), float(fit.intercept), float(r2), int(x.size))


def _window(t, y, t_min: float):
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    keep = t >= max(t_min, 1.0)
    return t[keep], y[keep]


def law_fit(t, y, law: str, t_min: float = 0.0) -> LinearFit:
    """One law on the records with t >= t_min: "linear" fits y on t, "logarithmic" y on log t."""
    if law not in ("linear", "logarithmic"):
        raise ValueError(f"unknown law {law!r}: linear or logarithmic")
    t, y = _window(t, y, t_min)
    return line_fit(t if law == "linear" else np.log(t), y)


def power_law(x, y) -> LinearFit:
    """y ~ x^exponent: a line fit of log y on log x (slope = exponent); x and y must be positive."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power law needs positive x and y")
    return line_fit(np.log(x), np.log(y))


def fit_laws(t, y, t_min: float | None = None) -> dict:
    """Both laws fitted to |y| over the records with t >= t_min (default max(t)/10), and the verdict."""
    t, y = np.asarray(t, np.float64), np.abs(np.asarray(y, np.float64))
    t_min = float(t.max()) / 10 if t_min is None else float(t_min)
    tw, yw = _window(t, y, t_min)
    if tw.size < 3:
        raise ValueError(f"fewer than 3 records at t >= {t_min:g} to fit; lower the fit start or "
                         f"raise --per-decade")
    lin, log = law_fit(tw, yw, "linear"), law_fit(tw, yw, "logarithmic")
    ratio = -log.intercept / log.slope if log.slope > 0 else float("nan")
    tau = float(np.exp(ratio)) if np.isfinite(ratio) and ratio < 700 else float("nan")
    pos = yw > 0  # |y| = 0 (no movement yet) has no logarithm
    exponent = power_law(tw[pos], yw[pos]).slope if np.unique(tw[pos]).size >= 2 else float("nan")
    law = "logarithmic" if log.r2 > lin.r2 else "linear"
    if exponent > SUPERLINEAR:
        law = "superlinear"
    return {"law": law, "t_min": float(tw.min()), "n_points": int(tw.size),
            "linear_r2": lin.r2, "linear_slope": lin.slope, "linear_intercept": lin.intercept,
            "log_r2": log.r2, "log_c": log.slope, "log_tau": tau, "growth_exponent": exponent}


def crossing_step(t, y, threshold: float) -> float:
    """First step at which y reaches ``threshold``, by the module's crossing rule; nan if never."""
    t = np.asarray(t, np.float64)
    y = np.maximum.accumulate(np.asarray(y, np.float64))
    hit = np.flatnonzero(y >= threshold)
    if hit.size == 0:
        return float("nan")
    j = hit[0]
    if j == 0 or t[j - 1] <= 0:
        return float(t[j])
    lo, hi = np.log(t[j - 1]), np.log(t[j])
    frac = (threshold - y[j - 1]) / (y[j] - y[j - 1])
    return float(np.exp(lo + frac * (hi - lo)))
