"""Shared command line and drawing helpers of the Section 4 figures (fig3, fig4, fig9, table1).

Each figure module reads the cached results of ``simulations.synthetic`` (computing them on a miss)
and only draws; ``--force`` recomputes, ``--quick`` uses the CI-sized configuration.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from figures.io import DEFAULT_RESULTS_DIR
from simulations.synthetic_data import FitNotConverged
from figures.style import DEFAULT_OUT, method_style


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser(prog: str, doc: str, results: bool = True) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=doc, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized run (2 seeds, fewer steps)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    p.add_argument("--force", action="store_true", help="recompute cached results")
    if results:
        p.add_argument("--results", default=str(DEFAULT_RESULTS_DIR), help="result cache directory")
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2)")
    return p


def run(prog: str, doc: str, argv, produce: Callable[[argparse.Namespace], list[Path]],
        results: bool = True) -> int:
    """Parse ``argv``, call ``produce(args)`` and print what it wrote; user errors: one line, exit 2."""
    args = parser(prog, doc, results).parse_args(argv)
    if results and args.workers is not None and args.workers < 1:
        print(f"{prog}: error: --workers must be >= 1 (got {args.workers})", file=sys.stderr)
        return 2
    try:
        paths = produce(args)
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except FitNotConverged as exc:  # the paper's convergence check on the reference/retrained fits
        print(f"{prog}: fit failed: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


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
