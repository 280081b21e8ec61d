"""Theorem 2 on a language model beside the logistic model: GA drifts linearly, NPO logarithmically?

    python -m llm collapse-rate                       # writes results/tofu_cpu/llm_collapse_rate.json
    python -m figures.fig_llm_collapse_rate [--from-results results/tofu_cpu] [--out figures/out]
        [--results results] [--force] [--json]

(a) |mean forget log pi_t/pi_ref| and (b) ||theta_t - theta_ref|| (log y) of the LM for GA and each
NPO beta, log-x (a logarithmic law is a straight line there, a linear one bends up); (c) the logistic
model of Theorem 2 (``simulations.theorem2``, cached under --results; 10^4 GD steps, eta = 1, one
seed, the LM run's betas) with ||b|| on the same axes. Reads the LM result
(``llm.studies.collapse_rate_report.read_result`` checks it); computes nothing for it. ``--quick`` changes
nothing (the logistic runs are already CI-sized). Writes ``llm_collapse_rate.png/.pdf``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator

from infra.files import DEFAULT_RESULTS_DIR
from llm.studies.collapse_rate_report import DEFAULT_RESULTS, RESULT_NAME, dead_step, read_result

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, method_style, npo_beta_style, save

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

STEM = "llm_collapse_rate"
PROG = "python -m figures.fig_llm_collapse_rate"


def logistic_curves(betas, results=DEFAULT_RESULTS_DIR, force=False) -> dict:
    """The logistic model's ||b|| (one seed) for GA and the same betas (the simulations' cached API)."""
    from simulations import theorem2
    cfg = theorem2.Config(beta=tuple(betas), steps=10_000, seeds=1, per_decade=20)
    cfg.validate(("logistic",))
    traj = theorem2.simulate(cfg, "logistic", results, force)
    return {"steps": traj.steps, "norm": traj.norm[0], "labels": list(traj.labels)}


def compute(args) -> dict:
    """The LM result as written, and the logistic curves for its betas."""
    doc = read_result(args.from_results)
    betas = [m["beta"] for m in doc["methods"] if m["method"] == "npo"] or [1.0]
    return {"llm": doc, "logistic": logistic_curves(betas, args.results, args.force)}


def options(p) -> None:
    p.add_argument("--from-results", default=str(DEFAULT_RESULTS),
                   help=f"folder of {RESULT_NAME} (python -m llm collapse-rate --results)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS_DIR),
                   help="the simulations' result cache (panel c; computed on a miss)")


def _style(label: str, j: int, n: int) -> dict:
    """GA (index 0) solid; NPO (indices 1..n-1, betas ascending) lighter for smaller beta."""
    if label == "GA":
        return method_style("GA", marker=None, linewidth=1.6)
    return npo_beta_style(j - 1, n - 1, linewidth=1.2)


def plot(data: dict, out_dir) -> list[Path]:
    doc, logistic = data["llm"], data["logistic"]
    fig, axes = figure(ncols=3, nrows=1, width=TWO_COLUMN, height=2.6)
    div_ax, par_ax, log_ax = axes[0]
    methods = doc["methods"]
    for j, m in enumerate(methods):
        t = np.asarray(m["steps"], float)
        keep = t > 0   # log-x: step 0 is not drawn
        style = _style(m["label"], j, len(methods))
        f = m["fit"]
        label = (f"{m['label']}: {f['law'][:3]} (R2 lin {f['linear_r2']:.2f} / log {f['log_r2']:.2f}); "
                 f"|D|(T) = {abs(m['forget_logratio'][-1]):.3g}")
        dead = dead_step(m)
        if dead is not None:   # a destroyed model's plateau is no law (collapse_rate_report.dead_step)
            label = (f"{m['label']}: runs away to |D| = {np.max(np.abs(m['forget_logratio'])):.2g}, "
                     f"model destroyed at step {dead} (gradient 0)")
        div_ax.plot(t[keep], np.abs(m["forget_logratio"])[keep], label=label, **style)
        par_ax.plot(t[keep], np.asarray(m["param_distance"])[keep], label=m["label"], **style)
    steps, norm, labels = logistic["steps"], np.asarray(logistic["norm"]), logistic["labels"]
    for j, label in enumerate(labels):
        log_ax.plot(steps[1:], norm[j, 1:], label=label, **_style("GA" if j == 0 else label, j, len(labels)))
    c = doc["config"]
    div_ax.set(title=f"(a) LM: |D| = |log pi/pi_ref| on {c['forget']}", xlabel="step t",
               ylabel="nats (summed over answer tokens)")
    par_ax.set(title="(b) LM: ||theta_t - theta_ref|| (log y)", xlabel="step t", yscale="log")
    log_ax.set(title="(c) logistic model (Thm 2): ||b||", xlabel="GD step t")
    top = max(np.max(np.abs(m["forget_logratio"])) for m in methods if m["method"] == "npo") \
        if any(m["method"] == "npo" for m in methods) else None
    if top:
        div_ax.set_ylim(0, 1.5 * top)
    for ax in (div_ax, par_ax, log_ax):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    log_ax.set_ylim(0, 1.3 * norm[1:].max() if norm.shape[0] > 1 else None)
    div_ax.legend(frameon=False, fontsize=5, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    log_ax.legend(frameon=False, fontsize=6)
    fig.suptitle(f"{c['optimizer']} lr={c['lr']:g}, clip={c['max_grad_norm'] or 'off'}, "
                 f"{c['steps']} full-batch steps", fontsize=7)
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog=PROG, doc=__doc__, compute=compute, plot=plot, inputs=None,
                       options=options)


if __name__ == "__main__":
    raise SystemExit(main())
