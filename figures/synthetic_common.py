"""Drawing helpers shared by the Section 4 figures (fig3, fig4, fig9): seed means with bands.

Each figure module reads the cached results of ``simulations.synthetic`` (computing them on a miss)
and only draws; its command line is figures/cli.py's.
"""
from __future__ import annotations

import numpy as np

from figures.style import method_style


def curve_with_band(ax, steps, per_seed, method: str, label: str | None = None, marker_every: int = 4,
                    **style_overrides):
    """Mean over seeds as a line, +-1 sd (ddof=1) as a band, the median as markers every few points."""
    style = method_style(method, **style_overrides)
    marker = style.pop("marker", "o")
    mean = per_seed.mean(axis=0)
    ax.plot(steps, mean, label=label or method, **style)
    if per_seed.shape[0] > 1:
        sd = per_seed.std(axis=0, ddof=1)
        low = mean - sd if per_seed.min() < 0 else np.maximum(mean - sd, 0.0)  # distances are >= 0
        ax.fill_between(steps, low, mean + sd, color=style["color"], alpha=0.12, linewidth=0)
        idx = np.arange(0, len(steps), marker_every)
        ax.plot(np.asarray(steps)[idx], np.median(per_seed, axis=0)[idx], linestyle="none", marker=marker,
                markersize=2.5, color=style["color"], markerfacecolor="none", markeredgewidth=0.6)


BAND_NOTE = "lines: mean over seeds, bands: +-1 sd, markers: median"


def band_legend(fig, handles, labels) -> None:
    """One legend row under the panels, titled with what lines, bands and markers show."""
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False,
               title=BAND_NOTE, title_fontsize=6)
