"""Collapse epoch vs learning rate on the cpu TOFU cut: GA against NPO (each beta), with and without
gradient clipping. "Collapse" = the first epoch at which Model Utility is below half its initial
value; runs that never collapse within the 10 epochs are drawn at "never".

    python -m llm lr-sweep                    # writes results/tofu_cpu/lr_sweep.json
    python -m figures.fig_tofu_lr_sweep [--sweep results/tofu_cpu/lr_sweep.json] [--out figures/out]
        [--table] [--json]

Reads the sweep file (``llm.studies.lr_sweep.read_sweep`` validates it); computes nothing. ``--table``
also prints the whole sweep as a markdown table; ``--quick``/``--force`` change nothing.
Writes ``fig_tofu_lr_sweep.png/.pdf``.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import NullLocator

from llm.studies.lr_sweep import DEFAULT_OUT as DEFAULT_SWEEP
from llm.studies.lr_sweep import read_sweep

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, method_style, npo_beta_style, save

STEM = "fig_tofu_lr_sweep"
PROG = "python -m figures.fig_tofu_lr_sweep"
NEVER = 11


def _style(method: str, beta, betas) -> dict:
    if method == "GA":
        return method_style("GA", markersize=3)
    return npo_beta_style(sorted(betas).index(beta), len(betas), fade=0.6, marker="s", markersize=3)


def plot(doc: dict, out_dir) -> list[Path]:
    rows = doc["rows"]
    tasks = sorted({r["task"] for r in rows})
    clips = sorted({r["max_grad_norm"] for r in rows}, reverse=True)
    betas = sorted({r["beta"] for r in rows if r["method"] == "NPO"})
    fig, axes = figure(ncols=len(clips), nrows=len(tasks), width=TWO_COLUMN,
                       height=2.3 * len(tasks))
    for i, task in enumerate(tasks):
        for j, clip in enumerate(clips):
            ax = axes[i][j]
            for method, beta in [("GA", None)] + [("NPO", b) for b in betas]:
                sel = sorted((r for r in rows if r["task"] == task and r["max_grad_norm"] == clip
                              and r["method"] == method and r["beta"] == beta), key=lambda r: r["lr"])
                if not sel:
                    continue
                lr = [r["lr"] for r in sel]
                ep = [NEVER if r["collapse_epoch"] is None else r["collapse_epoch"] for r in sel]
                label = "GA" if method == "GA" else f"NPO beta={beta:g}"
                ax.plot(lr, ep, label=label, **_style(method, beta, betas))
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_yticks([1, 3, 5, 7, 9, NEVER], ["1", "3", "5", "7", "9", "never"])
            ax.set_ylim(0.5, NEVER + 0.5)
            ax.axhspan(4, 6, color="0.9", zorder=0)
            ax.set_title(f"{task}, clipping {'at %g' % clip if clip else 'off'}")
            ax.set_xlabel("peak learning rate (AdamW)")
            if j == 0:
                ax.set_ylabel("epoch MU < MU0/2")
    axes[0][0].legend(frameon=False, fontsize=6)
    return save(fig, out_dir, STEM)


def table(doc: dict) -> str:
    """The whole sweep as a markdown table: one row per (task, clip, method, beta), one column per lr
    with "collapse epoch / final MU / best FQ at comparable utility"."""
    rows = doc["rows"]
    lrs = sorted({r["lr"] for r in rows})
    head = "| task | clip | method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |"
    lines = [head, "|" + "---|" * (3 + len(lrs))]
    groups = sorted({(r["task"], -r["max_grad_norm"], r["method"], r["beta"] or 0) for r in rows},
                    key=lambda g: (g[0] != "forget10", g[1], g[2], g[3]))
    for task, clip, method, beta in groups:
        cells = []
        for lr in lrs:
            hit = [r for r in rows if (r["task"], -r["max_grad_norm"], r["method"], r["beta"] or 0)
                   == (task, clip, method, beta) and r["lr"] == lr]
            if not hit:
                cells.append("not run")
                continue
            r = hit[0]
            fq = "-" if r["best_fq"] is None else f"{r['best_fq']:.2g}"
            ep = "never" if r["collapse_epoch"] is None else f"ep {r['collapse_epoch']}"
            cells.append(f"{ep} / {r['final_mu']:.2f} / {fq}")
        name = "GA" if method == "GA" else f"NPO β={beta:g}"
        lines.append(f"| {task} | {-clip:g} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options(p) -> None:
    p.add_argument("--sweep", default=str(DEFAULT_SWEEP), help="the sweep file (python -m llm lr-sweep)")
    p.add_argument("--table", action="store_true", help="print the sweep as a markdown table too")


def compute(args) -> dict:
    """The sweep as written (SweepError, a ValueError, if it is missing or malformed)."""
    return read_sweep(args.sweep)


def main(argv=None) -> int:
    return figure_main(argv, prog=PROG, doc=__doc__, compute=compute, plot=plot, inputs=None,
                       options=options, text=lambda doc, args: table(doc) if args.table else None)


if __name__ == "__main__":
    raise SystemExit(main())
