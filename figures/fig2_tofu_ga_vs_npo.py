"""Reproduces Figure 2: TOFU forget05, GA vs NPO over unlearning epochs, with sample answers.

    python -m figures.fig2_tofu_ga_vs_npo [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. Panels: Forget Quality (log), Model Utility and
KL(initial || current) on the Real World (world facts) set, per epoch, for GA and NPO (and their
+RT variants when present, thinner), seed mean with a mean +- std band when several seeds ran;
below, one forget-set question with the answers GA+RT and NPO+RT give at the last epoch (GA/NPO
when the +RT runs are absent). Writes ``fig2_tofu_ga_vs_npo.png/.pdf``.
"""
from __future__ import annotations

import textwrap

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import TWO_COLUMN, figure, method_style, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASK = "forget05"
METHODS = ["GA", "NPO", "GA+RT", "NPO+RT"]
PANELS = [(tr.FQ, "Forget Quality", "log"), (tr.MU, "Model Utility", "linear"),
          (f"kl:{tr.KL_REAL_WORLD}", "KL to initial, Real World", "log")]


def compute(runs) -> dict:
    groups = tr.main_runs(runs, TASK)
    present = [m for m in METHODS if m in groups]
    tr.require([m for m in present if m in ("GA", "NPO")], f"{TASK} GA/NPO",
               f"--tasks {TASK} --methods GA NPO")
    curves = {m: {key: tr.curve_dict(tr.curve(groups[m], key)) for key, _, _ in PANELS} for m in present}
    sample_pair = {}
    for m in (("GA+RT", "NPO+RT") if {"GA+RT", "NPO+RT"} <= set(present) else ("GA", "NPO")):
        if m in groups:
            forget = [s for s in tr.samples(groups[m][0]) if s.get("set") == "forget"]
            if forget:
                sample_pair[m] = forget[0]
    return {"task": TASK, "curves": curves, "samples": sample_pair}


def plot(data, out_dir):
    fig, axes = figure(ncols=3, nrows=2, width=TWO_COLUMN, height=3.2,
                       gridspec_kw={"height_ratios": [3, 1]})
    for ax, (key, label, scale) in zip(axes[0], PANELS):
        for method, curves in data["curves"].items():
            c = curves[key]
            thin = "+" in method
            keep = [i for i, s in enumerate(c["steps"]) if not (key.startswith("kl:") and s == 0)]
            seed_curve(ax, c["epochs"], c, keep, label=method, markersize=2.5,
                       linewidth=0.8 if thin else 1.4, **method_style(method))
        ax.set_yscale(scale)
        if key == tr.FQ:
            ax.set_ylim(top=2)
        if key == tr.MU:
            ax.set_ylim(-0.03, 1.0)
        ax.set_xlabel("epoch")
        ax.set_title(label)
    axes[0][0].legend(fontsize=6, frameon=False)
    gs = axes[1][0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    text_ax = fig.add_subplot(gs[1, :])
    text_ax.axis("off")
    lines = []
    for i, (method, s) in enumerate(data["samples"].items()):
        if i == 0:
            lines.append("Q: " + textwrap.shorten(s["question"], 150))
        lines.append(f"{method}: " + textwrap.shorten(s.get("generated", "") or "(empty)", 150))
    text_ax.text(0, 1, "\n".join(lines) or "(no samples stored)", va="top", ha="left", fontsize=6,
                 family="monospace", wrap=True)
    fig.suptitle(f"TOFU {data['task']}: GA vs NPO ({data['source']})", fontsize=8)
    return save(fig, out_dir, "fig2_tofu_ga_vs_npo")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig2_tofu_ga_vs_npo", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
