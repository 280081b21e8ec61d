"""Theorem 2's figure: ||b(t)||, the logit change on the forget set, of GA and NPO(β) against the step t.

    python -m figures.fig_collapse_rate [--quick] [--force] [--out figures/out] [--results results] [--json]

One row per setting (logistic model of Theorem 2, tabular softmax of Sec. 2.1), linear axes (left)
and log-x (right, where NPO's logarithmic drift is a straight line). Measured curves: seed mean
with min-max band. Under them, thin grey lines: Theorem 2's leading-order predictions from
theory/predictions.py (GA's line g η t / √n_f, NPO's asymptote (√n_f / β) log t + c), as
``simulations.theorem2.figure_data`` lays them out. Data: the cached trajectories of
``simulations.theorem2`` (the same runs as ``python -m simulations.collapse_rate``, which draws this
figure through ``plot``). Writes ``collapse_rate.png/.pdf``.
"""
from __future__ import annotations

import re

from matplotlib.ticker import NullLocator

from simulations import theorem2

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, method_style, save

STEM = "collapse_rate"
PREDICTION = dict(color="0.6", linewidth=0.6, zorder=1)
DASHES = ["-", "--", ":", "-."]


def compute(quick: bool = False, results="results", force: bool = False, workers=None) -> dict:
    """The figure's numbers from the default (or ``quick``) Theorem 2 runs, cached (one process:
    the settings are stepped together, ``workers`` is not used)."""
    cfg = theorem2.Config(**theorem2.QUICK) if quick else theorem2.Config()
    cfg.validate()
    return theorem2.figure_data(theorem2.simulate_settings(cfg, theorem2.SETTINGS, results, force))


def symbol(label: str) -> str:
    """``NPO beta=0.5`` -> ``NPO β=0.5``."""
    return re.sub(r"\bbeta\b", "β", label)


def plot(data: dict, out_dir) -> list:
    """||b|| vs steps per setting; theory's predictions as thin grey lines under the measurements."""
    settings = list(data)
    fig, axes = figure(ncols=2, nrows=len(settings), width=TWO_COLUMN, height=2.4 * len(settings))
    for row, setting in zip(axes, settings):
        d = data[setting]
        t = d["steps"]
        for j, label in enumerate(d["labels"]):
            style = method_style("GA" if j == 0 else "NPO", marker=None)
            if j:
                style["linestyle"] = DASHES[(j - 1) % len(DASHES)]
            for ax in row:
                ax.plot(t, d["predicted"][j], label="Theorem 2 (leading order)" if j == 0 else None,
                        **PREDICTION)
                ax.plot(t, d["mean"][j], label=symbol(label), zorder=2, **style)
                ax.fill_between(t, d["min"][j], d["max"][j], color=style["color"], alpha=0.2,
                                linewidth=0, zorder=2)
        row[0].set_title(f"{setting}: linear axes")
        row[1].set_title(f"{setting}: log-x (NPO straight = logarithmic)")
        row[1].set_xscale("log")
        row[1].xaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks cost ~0.4 s to lay out
        npo = d["mean"][1:]
        row[1].set_ylim(0, 1.3 * npo.max() if len(npo) else None)
        for ax in row:
            ax.set_xlabel("GD step t")
        row[0].set_ylabel("‖b‖  (logit change on forget set)")
        row[0].legend(loc="upper left", frameon=False)
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.fig_collapse_rate", doc=__doc__, compute=compute,
                       plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
