"""Theorem 2 on a language model beside the logistic model: GA drifts linearly, NPO logarithmically?

    python -m llm collapse-rate                       # writes results/tofu_cpu/llm_collapse_rate.json
    python -m figures.fig_llm_collapse_rate [--from-results results/tofu_cpu] [--out figures/out]

(a) |mean forget log pi_t/pi_ref| and (b) ||theta_t - theta_ref|| (log y) of the LM for GA and each
NPO beta, log-x (a logarithmic law is a straight line there, a linear one bends up); (c) the logistic
model of Theorem 2 (``simulations.collapse_rate``, cached; 10^4 GD steps, eta = 1, the LM run's
betas) with ||b|| on the same axes. Reads the LM result; computes nothing for it.
Writes ``llm_collapse_rate.png/.pdf``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.ticker import NullLocator

from figures.style import TWO_COLUMN, figure, method_style, save
from figures.synthetic_common import run

STEM = "llm_collapse_rate"
RESULT_NAME = "llm_collapse_rate.json"


def load(results) -> dict:
    path = Path(results) / RESULT_NAME
    if not path.exists():
        raise ValueError(f"{path} not found; run python -m llm collapse-rate first")
    try:
        doc = json.loads(path.read_text())
        for m in doc["methods"]:
            if len(m["steps"]) != len(m["forget_logratio"]) or len(m["steps"]) != len(m["param_distance"]):
                raise KeyError("lengths")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is malformed ({exc}); re-run python -m llm collapse-rate") from None
    return doc


def logistic_curves(betas, results, force=False):
    """The logistic model's ||b|| for GA and the same betas (the simulations' cached API)."""
    from simulations.collapse_rate import Config, simulate
    traj = simulate(Config(beta=tuple(betas), steps=10_000, seeds=1, per_decade=20), "logistic",
                    results, force)
    return traj.steps, traj.norm[0], traj.labels


def _style(label: str, j: int, n: int) -> dict:
    if label == "GA":
        return dict(color=method_style("GA")["color"], linestyle="-", linewidth=1.6)
    base = np.array(mcolors.to_rgb(method_style("NPO")["color"]))
    mix = 0.7 * (n - 1 - j) / max(n - 2, 1)
    return dict(color=tuple(base + (1 - base) * mix), linestyle="--", linewidth=1.2)


def plot(doc: dict, logistic, out_dir) -> list[Path]:
    fig, axes = figure(ncols=3, nrows=1, width=TWO_COLUMN, height=2.6)
    div_ax, par_ax, log_ax = axes[0]
    methods = doc["methods"]
    for j, m in enumerate(methods):
        t = np.asarray(m["steps"], float)
        keep = t > 0
        style = _style(m["label"], j, len(methods))
        f = m["fit"]
        label = (f"{m['label']}: {f['law'][:3]} (R2 lin {f['linear_r2']:.2f} / log {f['log_r2']:.2f}); "
                 f"|D|(T) = {abs(m['forget_logratio'][-1]):.3g}")
        div_ax.plot(t[keep], np.abs(m["forget_logratio"])[keep], label=label, **style)
        par_ax.plot(t[keep], np.asarray(m["param_distance"])[keep], label=m["label"], **style)
    steps, norm, labels = logistic
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
    argv = list(argv if argv is not None else sys.argv[1:])
    source = "results/tofu_cpu"
    if "--from-results" in argv:  # the LLM result's folder; --results stays the simulations' cache
        i = argv.index("--from-results")
        if i + 1 >= len(argv):
            print("python -m figures.fig_llm_collapse_rate: error: --from-results needs a folder",
                  file=sys.stderr)
            return 2
        source = argv[i + 1]
        del argv[i:i + 2]

    def produce(a):
        doc = load(source)
        betas = [m["beta"] for m in doc["methods"] if m["method"] == "npo"] or [1.0]
        return plot(doc, logistic_curves(betas, a.results, a.force), a.out)

    return run("python -m figures.fig_llm_collapse_rate", __doc__, argv, produce)


if __name__ == "__main__":
    raise SystemExit(main())
