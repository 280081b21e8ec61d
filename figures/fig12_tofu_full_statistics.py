"""Reproduces Figures 12-17: full TOFU statistics over unlearning, one figure per forget task.

    python -m figures.fig12_tofu_full_statistics [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never trains. Fig. 12..17 = forget01, 05, 10, 20, 30, 50 (tasks
without runs are skipped and named). Each figure is a 4x4 grid over epochs, one line per method
(seed mean, mean +- std band when several seeds ran):
row 1 Forget Quality, Model Utility, forget-set KL and Real World KL to the initial model; rows 2-4
ROUGE-L recall, Probability and Truth Ratio on Forget, Retain, Real Authors and Real World.
Also writes ``table_tofu_full_statistics.md``: every metric at each method's best and last epoch,
for every task present (forget90 included). Outputs ``fig12_tofu_stats_forget01.png/.pdf`` etc.
"""
from __future__ import annotations

import math

from figures.cli import figure_main
from llm.studies import tofu_results as tr
from infra.files import write_text
from figures.style import TWO_COLUMN, figure, method_style, save, seed_curve

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

FIGURE_OF_TASK = {"forget01": 12, "forget05": 13, "forget10": 14, "forget20": 15, "forget30": 16,
                  "forget50": 17}
TOP_ROW = [(tr.FQ, "Forget Quality", "log"), (tr.MU, "Model Utility", "linear"),
           (f"kl:{tr.KL_FORGET}", "Forget KL", "log"), (f"kl:{tr.KL_REAL_WORLD}", "Real World KL", "log")]
ROWS = [("ROUGE", 1), ("Probability", 2), ("Truth Ratio", 3)]   # index into tr.SET_KEYS tuples
TABLE_KEYS = [tr.FQ, tr.MU] + [k for s in tr.SET_KEYS for k in s[1:]] + \
    [f"kl:{tr.KL_FORGET}", f"kl:{tr.KL_REAL_WORLD}"]


def panel_keys():
    """(key, title, scale) of the 16 panels, row by row."""
    keys = list(TOP_ROW)
    for row_label, col in ROWS:
        keys += [(s[col], f"{s[0]} {row_label}", "linear") for s in tr.SET_KEYS]
    return keys


def compute(runs) -> dict:
    tasks = tr.tasks_present(runs)
    curves, table = {}, {}
    for task in tasks:
        groups = tr.labelled_runs(runs, task)
        if not groups:
            continue
        table[task] = {m: _table_rows(rs) for m, rs in groups.items()}
        if task in FIGURE_OF_TASK:
            curves[task] = {m: {k: tr.curve_dict(tr.curve(rs, k)) for k, _, _ in panel_keys()}
                            for m, rs in groups.items()}
    if not table:
        tr.require([], "main-grid", "--tasks forget01 forget05 forget10")
    skipped = [t for t in FIGURE_OF_TASK if t not in curves]
    return {"curves": curves, "table": table, "skipped": skipped}


def _table_rows(rs) -> dict:
    fq = tr.curve(rs, tr.FQ)
    best, last = tr.best_index(fq), len(fq.steps) - 1
    out = {}
    for name, i in (("best", best), ("last", last)):
        out[name] = {"epoch": float(fq.epochs[i]),
                     **{k: float(tr.curve(rs, k).mean[i]) for k in TABLE_KEYS}}
    return out


def markdown_table(data) -> str:
    short = {tr.FQ: "FQ", tr.MU: "MU"}
    head = ["task", "method", "epoch"] + [short.get(k, k) for k in TABLE_KEYS]
    lines = [f"# TOFU full statistics ({data['source']})", "",
             "Seed means at each method's best (peak-FQ) epoch and at the last epoch.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, methods in data["table"].items():
        for method, rows in methods.items():
            for which, row in rows.items():
                cells = [task, method, f"{which} {row['epoch']:g}"] + [_fmt(row[k]) for k in TABLE_KEYS]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def plot(data, out_dir):
    paths = []
    for task, methods in data["curves"].items():
        fig, axes = figure(ncols=4, nrows=4, width=TWO_COLUMN, height=6.2, sharex=True)
        for ax, (key, title, scale) in zip(axes.flat, panel_keys()):
            for method, cs in methods.items():
                c = cs[key]
                keep = [i for i, s in enumerate(c["steps"])
                        if not (scale == "log" and key.startswith("kl:") and s == 0)]
                if keep:
                    style = method_style(method.split(" ")[0])
                    if " " in method:   # a tagged RT-weight run: same colour, thin dash-dot
                        style.update(linestyle="-.", marker=None)
                    seed_curve(ax, c["epochs"], c, keep, label=method, markersize=1.5, linewidth=0.9,
                               **style)
            ax.set_yscale(scale)
            if key == tr.FQ:
                ax.set_ylim(top=2)
            ax.set_title(title, fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
        fig.legend(*axes[0][1].get_legend_handles_labels(), loc="outside lower center", ncols=6, fontsize=5, frameon=False)
        n = FIGURE_OF_TASK[task]
        fig.suptitle(f"Figure {n}: TOFU {task} full statistics ({data['source']})", fontsize=8)
        paths += save(fig, out_dir, f"fig{n}_tofu_stats_{task}")
    table = out_dir / "table_tofu_full_statistics.md"
    write_text(table, markdown_table(data))
    if data["skipped"]:
        print("skipped (no runs): " + ", ".join(f"Fig {FIGURE_OF_TASK[t]} {t}" for t in data["skipped"]))
    return paths + [table]


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig12_tofu_full_statistics", doc=__doc__,
                          compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
