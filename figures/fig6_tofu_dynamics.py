"""Reproduces Figure 6: TOFU Forget Quality (top) and Model Utility (bottom) over unlearning.

    python -m figures.fig6_tofu_dynamics [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. Columns forget01 (x = optimizer step, as the paper
evaluates every step there), forget05 and forget10 (x = epoch); one line per method, seed mean with
a mean +- std band when several seeds ran. Writes ``fig6_tofu_dynamics.png/.pdf``.
"""
from __future__ import annotations

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import TWO_COLUMN, figure, method_style, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASKS = ["forget01", "forget05", "forget10"]


def compute(runs) -> dict:
    out = {}
    for task in TASKS:
        groups = tr.main_runs(runs, task)
        if groups:
            out[task] = {m: {k: tr.curve_dict(tr.curve(rs, k)) for k in (tr.FQ, tr.MU)}
                         for m, rs in groups.items()}
    if not out:
        tr.require([], "forget01/05/10", "--tasks forget01 forget05 forget10")
    return {"curves": out}


def plot(data, out_dir):
    curves = data["curves"]
    fig, axes = figure(ncols=len(curves), nrows=2, width=TWO_COLUMN, height=3.8, sharex="col")
    for j, (task, methods) in enumerate(curves.items()):
        x_key, x_label = ("steps", "step") if task == "forget01" else ("epochs", "epoch")
        for i, (key, label) in enumerate(((tr.FQ, "Forget Quality"), (tr.MU, "Model Utility"))):
            ax = axes[i][j]
            for method, cs in methods.items():
                c = cs[key]
                seed_curve(ax, c[x_key], c, label=method, markersize=2, **method_style(method))
            if key == tr.FQ:
                ax.set_yscale("log")
                ax.set_ylim(top=2)
                ax.axhline(0.05, color="0.6", linestyle=":", linewidth=0.8)
                ax.set_title(task)
            else:
                ax.set_ylim(-0.03, 1.0)
                ax.set_xlabel(x_label)
            if j == 0:
                ax.set_ylabel(label)
    fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="outside lower center", ncols=9, fontsize=5.5, frameon=False)
    fig.suptitle(f"TOFU unlearning dynamics ({data['source']})", fontsize=8)
    return save(fig, out_dir, "fig6_tofu_dynamics")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig6_tofu_dynamics", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
