"""Reproduces Table 1: learning rate and beta of each synthetic method, for alpha = 1 and alpha = 0.

    python -m figures.table1_hyperparams [--out figures/out]

Renders ``simulations.synthetic_methods.TABLE1`` (the defaults every synthetic run uses) with the
source of each row: the paper's Table 1, the authors' parameter_values.yml (KL variants, DPO), or
our choice (KTO, absent from both). Prints the markdown and writes ``table1_hyperparams.md`` and
``table1_hyperparams.png/.pdf``.
"""
from __future__ import annotations

from pathlib import Path

from simulations.synthetic_methods import TABLE1, TABLE1_SOURCE

from infra.files import write_text
from figures.style import TWO_COLUMN, figure, save
from figures.cli import figure_main

STEM = "table1_hyperparams"
HEADER = ("method", "lr, alpha=1", "lr, alpha=0", "beta, alpha=1", "beta, alpha=0", "source")
HEADER_FIGURE = ("method", "lr (α=1)", "lr (α=0)", "β (α=1)", "β (α=0)", "source")


def rows() -> list[tuple[str, ...]]:
    def lr(x):
        return f"{x:.0e}".replace("e-0", "e-")

    def beta(x):
        return "-" if x is None else f"{x:g}"
    return [(m, lr(TABLE1[1.0][m][0]), lr(TABLE1[0.0][m][0]), beta(TABLE1[1.0][m][1]),
             beta(TABLE1[0.0][m][1]), TABLE1_SOURCE[m]) for m in TABLE1[1.0]]


def markdown() -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows()]
    return "\n".join(lines) + "\n"


def plot(out_dir):
    body = rows()
    fig, axes = figure(width=TWO_COLUMN, height=0.25 * (len(body) + 1) + 0.3)
    ax = axes[0][0]
    ax.set_axis_off()
    table = ax.table(cellText=body, colLabels=HEADER_FIGURE, loc="center", cellLoc="center",
                     colWidths=[0.09, 0.1, 0.1, 0.1, 0.1, 0.41])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (r, _), cell in table.get_celld().items():
        cell.set_linewidth(0.4)
        if r == 0:
            cell.set_text_props(weight="bold")
    ax.set_title("Table 1: learning rate and beta of the synthetic unlearning runs", fontsize=7)
    text = markdown()
    md = Path(out_dir) / f"{STEM}.md"
    write_text(md, text)
    print(text, end="")
    return [md] + save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.table1_hyperparams", doc=__doc__, inputs=None,
                       compute=lambda a: {}, plot=lambda data, out: plot(out))


if __name__ == "__main__":
    raise SystemExit(main())
