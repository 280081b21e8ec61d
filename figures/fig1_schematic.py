"""Reproduces Figure 1: the schematic relating GA, NPO and DPO (drawn, no data).

    python -m figures.fig1_schematic [--out figures/out]

DPO on (forget prompt, preferred y_w, dispreferred y_l) pairs; dropping the preferred answer gives
NPO (Eq. 3, with the authors' 2/beta prefactor); NPO tends to GA as beta -> 0 (Proposition 1);
adding the retain loss gives NPO+RT. Loss formulas are typeset with matplotlib's mathtext.
Writes ``fig1_schematic.png/.pdf``.
"""
from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from figures.style import TWO_COLUMN, figure, method_style, save
from figures.cli import figure_main

STEM = "fig1_schematic"

BOXES = {  # name: (centre x, centre y, width, title, formula)
    "DPO": (0.30, 0.84, 0.56, "DPO (Eq. 2), on pairs: preferred $y_w$, dispreferred $y_l$",
            r"$-\frac{2}{\beta}\,\mathbb{E}\log\sigma\!\left(\beta\log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}"
            r"-\beta\log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\right)$"),
    "NPO": (0.30, 0.50, 0.56, "NPO (Eq. 3), on forget samples only",
            r"$-\frac{2}{\beta}\,\mathbb{E}\log\sigma\!\left(-\beta\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}\right)"
            r"\;\geq 0$"),
    "GA": (0.30, 0.15, 0.56, "GA (Eq. 1): unbounded below",
           r"$\mathbb{E}\,\log\pi_\theta(y|x)\;\to -\infty$"),
    "NPO+RT": (0.84, 0.50, 0.28, "NPO+RT", r"$\mathcal{L}_{NPO}-\mathbb{E}_{D_{RT}}\log\pi_\theta(y|x)$"),
}
H = 0.20
ARROWS = [  # (from, to, label, label position)
    ("DPO", "NPO", "drop the preferred answer $y_w$", (0.32, 0.67)),
    ("NPO", "GA", r"$\beta\to 0$ (Prop. 1): the gradient weight"
                  "\n" r"$2\pi_\theta^\beta/(\pi_\theta^\beta+\pi_{ref}^\beta)\to 1$, $\nabla\mathcal{L}_{NPO}\to\nabla\mathcal{L}_{GA}$",
     (0.32, 0.325)),
    ("NPO", "NPO+RT", "add the\nretain loss", (0.64, 0.56)),
]


def _anchor(name: str, side: str):
    x, y, w = BOXES[name][:3]
    return {"top": (x, y + H / 2), "bottom": (x, y - H / 2), "left": (x - w / 2, y),
            "right": (x + w / 2, y)}[side]


def plot(out_dir):
    fig, axes = figure(width=TWO_COLUMN, height=3.2)
    ax = axes[0][0]
    ax.set_axis_off()
    ax.set(xlim=(0, 1), ylim=(0, 1))
    for name, (x, y, w, title, formula) in BOXES.items():
        color = method_style(name)["color"]
        ax.add_patch(FancyBboxPatch((x - w / 2, y - H / 2), w, H, boxstyle="round,pad=0.005,rounding_size=0.02",
                                    facecolor="white", edgecolor=color, linewidth=1.4))
        ax.text(x, y + 0.05, title, ha="center", va="center", fontsize=7.5, weight="bold", color=color)
        ax.text(x, y - 0.035, formula, ha="center", va="center", fontsize=7)
    for src, dst, label, (lx, ly) in ARROWS:
        sides = ("right", "left") if dst == "NPO+RT" else ("bottom", "top")
        ax.add_patch(FancyArrowPatch(_anchor(src, sides[0]), _anchor(dst, sides[1]), arrowstyle="-|>",
                                     mutation_scale=11, linewidth=1.1, color="#444444"))
        ax.text(lx, ly, label, ha="left" if dst != "NPO+RT" else "center", va="center", fontsize=6.5,
                color="#333333")
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.fig1_schematic", doc=__doc__, inputs=None,
                       compute=lambda a: {}, plot=lambda data, out: plot(out))


if __name__ == "__main__":
    raise SystemExit(main())
