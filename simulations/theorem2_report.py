"""Theorem 2's results as text tables: fitted vs predicted rates, thresholds, assumptions, sweeps.

Reads the dicts of simulations/theorem2.py (``run``, ``sweep``); prints nothing itself.
"""
from __future__ import annotations

import numpy as np

from .theorem2 import Config

__all__ = ["format_report", "format_sweep", "verdict"]


def verdict(passed) -> str:
    return "info" if passed is None else ("PASS" if passed else "FAIL")


def format_report(report: dict, cfg: Config, facts: dict) -> str:
    setting = report["setting"]
    where = (f"{cfg.data} data, d={cfg.dim}" if setting == "logistic"
             else f"K={cfg.classes} classes, free logits")
    lines = [f"== {setting}: {where}, n_f={cfg.n_forget}, eta={cfg.lr:g}, {cfg.steps} GD steps, "
             f"{cfg.seeds} seed(s); fits over t >= {report['t_fit']:g} ==",
             f"{'method':<14} {'law':<13} {'fitted slope':>13} {'theory':>11} {'rel.err':>8} "
             f"{'R^2 (min)':>11}   ||b(t={report['t_check']:.0f})|| meas. / theory"]
    for m in report["methods"]:
        fit, pred = m["fit"], m["prediction"]
        extra = (f"; exact flow {pred['norm_at_t_check_flow']:.5g}"
                 if "norm_at_t_check_flow" in pred else "")
        lines.append(f"{m['label']:<14} {m['law']:<13} {fit['slope']:>13.6g} {pred['slope']:>11.6g} "
                     f"{fit['slope'] / pred['slope'] - 1:>+8.2%} {fit['r2_min']:>11.7f}   "
                     f"{m['norm_at_t_check']:.5g} / {pred['norm_at_t_check']:.5g}{extra}")
    lines.append("(NPO's log-slope reaches sqrt(n_f)/beta only as t -> inf: its corrections decay like "
                 "t^-min(1, 1/beta), so finite windows overshoot, most for large beta)")
    if setting == "tabular":
        lines.append("(tabular: NPO also drifts q towards one-hot, slowly raising the gain 1+|q|^2 "
                     "and with it the log-slope; theory's NPO ||b|| uses the recorded gain)")
    th = report["thresholds"]
    if th["tau"]:
        lines += ["", "steps to reach ||b|| = tau = delta*sqrt(n_f), and NPO/GA ratio "
                  "('-': not within the horizon):",
                  f"{'delta':>6} {'tau':>8}" + "".join(f"{r['label']:>22}" for r in th["rows"])]
        ga_steps = th["rows"][0]["steps"]
        for i, (delta, tau) in enumerate(zip(th["delta"], th["tau"])):
            cells = []
            for r in th["rows"]:
                t = r["steps"][i]
                text = "-" if not np.isfinite(t) else (
                    f"{t:.4g}" if r["beta"] is None else f"{t:.3g} (x{t / ga_steps[i]:.3g})")
                cells.append(text.rjust(22))
            lines.append(f"{delta:>6g} {tau:>8.3g}" + "".join(cells))
        for law in th["laws"]:
            basis = f"g = {law['gain']:.3g}" if "gain" in law else "asymptotic"
            lines.append(f"  {law['label']:<14} {law['law']:<22} a = {law['slope']:.4g}  "
                         f"(theory, {basis}: {law['theory']:.4g}; R^2 {law['r2']:.5f})")
    lines += ["", "Theorem 2 assumptions: max_{i!=j}|<x_i,x_j>|*n_f = "
              f"{facts['coupling']:.3g}, |x_i| in [{facts['x_norm_min']:.3g}, "
              f"{facts['x_norm_max']:.3g}], |theta_init| = {facts['theta_init_norm']:.3g}, "
              f"n_f <= d: {_yes(facts['n_forget_le_dim'])}, eig_min(XX^T) = "
              f"{facts['gram_min_eigenvalue']:.3g}, eta <= 1: {_yes(facts['lr_le_1'])}"
              + (f"; initial gain 1+|q|^2 = {facts['gain_init_mean']:.3g} (-> 2 under GA)"
                 if "gain_init_mean" in facts else "")]
    lines.append("checks:")
    for c in report["checks"]:
        lines.append(f"  [{verdict(c['passed'])}] {c['name']}: {c['value']:.6g}")
    return "\n".join(lines)


def _yes(flag) -> str:
    return "yes" if flag else "NO"


def format_sweep(result: dict) -> str:
    p, rows = result["param"], result["exponents"]
    lines = [f"== sweep {p} ({result['setting']}); fitted slope / theory per value ==",
             f"{p:>10} {'steps':>8}" + "".join(f"{r['quantity'].split(' slope')[0]:>24}"
                                               for r in rows)]
    steps = result["steps"] * len(result["values"]) if p == "beta" else result["steps"]
    for i, (v, n) in enumerate(zip(result["values"], steps)):
        lines.append(f"{v:>10g} {n:>8}" + "".join(
            f"{r['measured'][i]:.4g} / {r['predicted'][i]:.4g}".rjust(24) for r in rows))
    lines.append("scaling exponents:")
    for row in rows:
        lines.append(f"  [{verdict(row['passed'])}] {row['quantity']:<38} exponent in {p}: "
                     f"{row['exponent']:+.4f}  theory {row['theory']:+.4f}  (tol {row['tolerance']:.3g},"
                     f" R^2 {row['r2']:.5f})")
    return "\n".join(lines)
