"""Reproduces Figure 5: TOFU Forget Quality vs Model Utility, each method at its best epoch.

    python -m figures.fig5_tofu_tradeoff [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs (``python -m llm pipeline``), never trains. One panel per task
(forget01/05/10 where present); each method is one marker at its peak-FQ epoch (seed means, see
``llm.studies.tofu_results``), with mean +- std error bars in both directions when several seeds ran. As in
the paper the y axis is linear above the gray dotted line
(FQ = 0.05, "meaningful forgetting") and logarithmic below it. Writes ``fig5_tofu_tradeoff.png/.pdf``.
"""
from __future__ import annotations

import numpy as np

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import TWO_COLUMN, figure, method_style, save

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASKS = ["forget01", "forget05", "forget10"]
SPLIT = 0.05        # FQ where the y axis switches from log (below) to linear (above)
LINEAR_SPAN = 3.0   # height of the linear part [SPLIT, 1] in log-decade units
FLOOR = 1e-300      # KS p-values underflow to 0 for fully separated distributions


def compute(runs) -> dict:
    """{task: {method: best_point}} for the tasks present among forget01/05/10."""
    out = {}
    for task in TASKS:
        groups = tr.main_runs(runs, task)
        if groups:
            out[task] = {m: tr.best_point(rs) for m, rs in groups.items()}
    if not out:
        tr.require([], "forget01/05/10", "--tasks forget01 forget05 forget10")
    return {"points": out}


def split_forward(y):
    y = np.maximum(np.asarray(y, dtype=float), FLOOR)
    return np.where(y < SPLIT, np.log10(y / SPLIT), (y - SPLIT) / (1 - SPLIT) * LINEAR_SPAN)


def split_inverse(z):
    z = np.asarray(z, dtype=float)
    return np.where(z < 0, SPLIT * 10.0 ** np.minimum(z, 0), SPLIT + z / LINEAR_SPAN * (1 - SPLIT))


def plot(data, out_dir):
    points = data["points"]
    fig, axes = figure(ncols=len(points), width=TWO_COLUMN, height=2.6)
    for ax, (task, methods) in zip(axes[0], points.items()):
        fqs = [max(p["forget_quality"], FLOOR) for p in methods.values() if np.isfinite(p["forget_quality"])]
        lowest = min(fqs + [1e-3])
        for method, p in methods.items():
            st = method_style(method)
            spread = p.get("n_seeds", 1) > 1
            ax.errorbar([p["model_utility"]], [max(p["forget_quality"], FLOOR)], linestyle="none",
                        xerr=[p["model_utility_std"]] if spread else None,
                        yerr=[p["forget_quality_std"]] if spread else None, capsize=2, elinewidth=0.7,
                        marker=st.get("marker", "o"), color=st["color"], label=method, markersize=5)
        ax.set_yscale("function", functions=(split_forward, split_inverse))
        ax.set_ylim(lowest / 3, 1.0)
        decades = np.arange(np.floor(np.log10(lowest / 3)), np.log10(SPLIT), 1)
        step = max(1, int(np.ceil(len(decades) / 5)))
        ticks = [10.0 ** d for d in decades[::-1][::step][::-1]] + [SPLIT, 0.5, 1.0]
        ax.set_yticks(ticks)
        ax.set_yticklabels([f"{t:g}" if t >= SPLIT else f"1e{int(np.log10(t))}" for t in ticks])
        ax.axhline(SPLIT, color="0.6", linestyle=":", linewidth=0.8)
        ax.set_xlim(-0.03, 1.0)   # one utility scale for every task, as in the paper
        ax.set_title(task)
        ax.set_xlabel("Model Utility")
    axes[0][0].set_ylabel("Forget Quality (best epoch)")
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    names = sorted(handles, key=tr._method_rank)
    fig.legend([handles[n] for n in names], names, loc="outside lower center", ncols=9, fontsize=6,
               frameon=False)
    fig.suptitle(f"TOFU: Forget Quality vs Model Utility ({data['source']})", fontsize=8)
    return save(fig, out_dir, "fig5_tofu_tradeoff")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig5_tofu_tradeoff", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
