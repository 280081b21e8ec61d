"""Reproduces Figure 8: NPO+RT on forget50 (RT weight 5) and forget90 (RT weight 12).

    python -m figures.fig8_tofu_forget50_90 [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. Forget Quality (log) and Model Utility per epoch
for the paper's large-RT-weight NPO+RT runs; NPO+RT with RT weight 1 on the same task is drawn
thin and dashed when present (the paper's "vanilla NPO+RT" comparison). Seed means, with a mean +- std
band when several seeds ran. Writes
``fig8_tofu_forget50_90.png/.pdf``.
"""
from __future__ import annotations

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import ONE_COLUMN, figure, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

#: (task, RT weight) pairs of the paper's Fig. 8.
SETTINGS = [("forget50", 5.0), ("forget90", 12.0)]
COLORS = {"forget50": "#009E73", "forget90": "#0072B2"}


def compute(runs) -> dict:
    lines = {}
    for task, weight in SETTINGS:
        for w in (weight, 1.0):
            rs = tr.select(runs, task=task, method="NPO+RT", rt_weight=w)
            if rs:
                lines[f"{task} RT={w:g}"] = {"task": task, "rt_weight": w, "main": w == weight,
                                             **{k: tr.curve_dict(tr.curve(rs, k)) for k in (tr.FQ, tr.MU)}}
    tr.require([v for v in lines.values() if v["main"]], "forget50/forget90 NPO+RT",
               "--tasks forget50 forget90 (the paper's RT weights 5 and 12 are the defaults)")
    return {"lines": lines}


def plot(data, out_dir):
    fig, axes = figure(ncols=2, width=ONE_COLUMN * 1.6, height=1.9)
    for ax, (key, label) in zip(axes[0], ((tr.FQ, "Forget Quality"), (tr.MU, "Model Utility"))):
        for name, line in data["lines"].items():
            c = line[key]
            seed_curve(ax, c["epochs"], c, label=name, color=COLORS.get(line["task"], "k"),
                       linestyle="-" if line["main"] else "--", linewidth=1.3 if line["main"] else 0.8,
                       marker="o" if line["main"] else None, markersize=2)
        if key == tr.FQ:
            ax.set_yscale("log")
            ax.set_ylim(top=2)
            ax.axhline(0.05, color="0.6", linestyle=":", linewidth=0.8)
        else:
            ax.set_ylim(-0.03, 1.0)
        ax.set_xlabel("epoch")
        ax.set_title(label)
    axes[0][1].legend(fontsize=6, frameon=False)
    fig.suptitle(f"NPO+RT, large forget sets ({data['source']})", fontsize=8)
    return save(fig, out_dir, "fig8_tofu_forget50_90")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig8_tofu_forget50_90", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
