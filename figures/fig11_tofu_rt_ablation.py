"""Reproduces Figure 11: the NPO vs RT weight ablation of NPO+RT on TOFU forget10.

    python -m figures.fig11_tofu_rt_ablation [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. The NPO weight is 1; the RT weight takes the values
the pipeline ran (plain NPO counts as RT weight 0). Panels: Forget Quality and Model Utility per
epoch, one line per RT weight; and both at the last epoch against the RT weight (the paper: MU
rises with the weight, FQ peaks at an intermediate one). Seed means; mean +- std bands and
error bars when several seeds ran. Writes ``fig11_tofu_rt_ablation.png/.pdf``.
"""
from __future__ import annotations

import matplotlib

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import TWO_COLUMN, figure, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASK = "forget10"


def compute(runs) -> dict:
    by_weight: dict[float, list] = {}
    for r in tr.select(runs, task=TASK, method="NPO") + tr.select(runs, task=TASK, method="NPO+RT"):
        w = 0.0 if r.method == "NPO" else r.rt_weight
        by_weight.setdefault(w, []).append(r)
    if len(by_weight) < 2:
        tr.require([], f"{TASK} NPO/NPO+RT with two or more RT weights",
                   f"--tasks {TASK} --rt-ablation 0 1 2 5")
    weights = sorted(by_weight)
    return {"task": TASK, "weights": weights,
            "curves": {w: {k: tr.curve_dict(tr.curve(by_weight[w], k)) for k in (tr.FQ, tr.MU)}
                       for w in weights},
            "final": {w: tr.final_point(by_weight[w]) for w in weights}}


def plot(data, out_dir):
    fig, axes = figure(ncols=3, width=TWO_COLUMN, height=2.2)
    weights = data["weights"]
    cmap = matplotlib.colormaps["viridis"]
    for ax, (key, label) in zip(axes[0][:2], ((tr.FQ, "Forget Quality"), (tr.MU, "Model Utility"))):
        for i, w in enumerate(weights):
            c = data["curves"][w][key]
            seed_curve(ax, c["epochs"], c, color=cmap(i / max(len(weights) - 1, 1)), marker="o",
                       markersize=2, label=f"RT weight {w:g}")
        if key == tr.FQ:
            ax.set_yscale("log")
            ax.set_ylim(top=2)
            ax.axhline(0.05, color="0.6", linestyle=":", linewidth=0.8)
        else:
            ax.set_ylim(-0.03, 1.0)
        ax.set_xlabel("epoch")
        ax.set_title(label)
    axes[0][1].legend(fontsize=6, frameon=False, loc="lower right")
    ax = axes[0][2]
    fq = [data["final"][w]["forget_quality"] for w in weights]
    mu = [data["final"][w]["model_utility"] for w in weights]
    fq_err = [data["final"][w]["forget_quality_std"] for w in weights]
    mu_err = [data["final"][w]["model_utility_std"] for w in weights]
    ax.errorbar(weights, fq, yerr=fq_err if any(fq_err) else None, fmt="o-", color="#0072B2",
                markersize=3, capsize=2, label="Forget Quality")
    ax.set_yscale("log")
    ax.set_xlabel("RT weight (NPO weight 1)")
    ax.set_ylabel("Forget Quality (last epoch)", color="#0072B2")
    twin = ax.twinx()
    twin.errorbar(weights, mu, yerr=mu_err if any(mu_err) else None, fmt="s--", color="#D55E00",
                  markersize=3, capsize=2, label="Model Utility")
    twin.set_ylabel("Model Utility (last epoch)", color="#D55E00")
    ax.set_title("last epoch")
    fig.suptitle(f"TOFU {data['task']}: NPO vs RT weight ({data['source']})", fontsize=8)
    return save(fig, out_dir, "fig11_tofu_rt_ablation")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig11_tofu_rt_ablation", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
