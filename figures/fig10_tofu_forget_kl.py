"""Reproduces Figure 10: forget-set KL to the initial model over unlearning on TOFU forget10.

    python -m figures.fig10_tofu_forget_kl [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. KL(initial || current) on the forget set (per
answer-token average of the full-vocabulary KL, see ``llm/pipeline/run.py``) per epoch, one line per
method (seed mean, mean +- std band when several seeds ran). Note, as the paper does, that the
KL term of GA+KL / NPO+KL acts on the *retain* set; this figure measures the forget set.
Writes ``fig10_tofu_forget_kl.png/.pdf``.
"""
from __future__ import annotations

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from figures.style import ONE_COLUMN, figure, method_style, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASK = "forget10"
KEY = f"kl:{tr.KL_FORGET}"


def compute(runs) -> dict:
    groups = tr.require(tr.main_runs(runs, TASK), TASK, f"--tasks {TASK}")
    return {"task": TASK, "curves": {m: tr.curve_dict(tr.curve(rs, KEY)) for m, rs in groups.items()}}


def plot(data, out_dir):
    fig, axes = figure(width=ONE_COLUMN, height=2.3)
    ax = axes[0][0]
    for method, c in data["curves"].items():
        keep = [i for i, s in enumerate(c["steps"]) if s > 0]   # KL is 0 at step 0
        seed_curve(ax, c["epochs"], c, keep, label=method, markersize=2, **method_style(method))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("forget-set KL to initial model")
    ax.legend(fontsize=5.5, frameon=False, ncols=2)
    ax.set_title(f"TOFU {data['task']} ({data['source']})")
    return save(fig, out_dir, "fig10_tofu_forget_kl")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig10_tofu_forget_kl", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
