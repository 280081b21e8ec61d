"""One figure style for the whole package: sizes, fonts, and a fixed colour and line per method
(the method's own, from the registry in llm/train/methods/; the marker is the figures' choice).

Every figure module draws through ``figure(...)`` and ``save(fig, out_dir, stem)`` so that all
figures agree (conventions.md section 3.4-3.5): Agg backend, 42-type fonts, no LaTeX,
constrained layout, PNG at 200 dpi and byte-stable PDFs.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from infra.files import atomic_path  # noqa: E402
from llm.train.methods import REGISTRY  # noqa: E402  (labels, colours and lines; imports no torch)

ONE_COLUMN, TWO_COLUMN = 3.25, 6.75  # inches
DEFAULT_OUT = Path("figures/out")

RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2,
    "pdf.fonttype": 42, "ps.fonttype": 42, "text.usetex": False,
    "figure.constrained_layout.use": True, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "npo",
}

# Okabe-Ito colour-blind-safe palette: the colour of a name the registry does not know.
_OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
#: Markers by method label (a method without one is drawn without markers).
MARKERS = {"GA": "o", "GA+RT": "s", "GA+KL": "v", "IDK+RT": "x", "NPO": "^", "NPO+RT": "D", "NPO+KL": "<",
           "DPO": "P", "DPO+RT": "*", "DPO+KL": "h", "KTO": "d", "KTO+RT": "p", "SimNPO": "X"}
_BY_KEY = {m.label.upper(): m for m in REGISTRY.values()}


def method_style(name: str, **overrides) -> dict:
    """Line style for a method label such as "NPO+RT" or name such as "npo_rt" (case-insensitive)."""
    key = name.upper().replace("_", "+")
    m = _BY_KEY.get(key)
    if m is None:
        key = key.replace("SIMNPO", "SimNPO")
        style = dict(color=_OKABE_ITO[sum(map(ord, key)) % 8], linestyle="-")
    else:
        style = dict(color=m.colour, linestyle=m.linestyle)
        if m.label in MARKERS:
            style["marker"] = MARKERS[m.label]
    style.update(overrides)
    return style


def npo_beta_style(rank: int, count: int, fade: float = 0.7, **overrides) -> dict:
    """NPO at the ``rank``-th smallest of ``count`` betas, dashed: NPO's colour for the largest beta,
    mixed towards white by up to ``fade`` for smaller ones (so a lighter line is a smaller beta)."""
    base = np.array(mcolors.to_rgb(method_style("NPO")["color"]))
    mix = fade * (count - 1 - rank) / max(count - 1, 1)
    return {"color": tuple(base + (1 - base) * mix), "linestyle": "--", **overrides}


def figure(ncols: int = 1, nrows: int = 1, width: float = ONE_COLUMN, height: float | None = None,
           **kwargs):
    """A new figure in the package style (call inside nothing: the style is applied here)."""
    plt.rcParams.update(RC)
    height = height if height is not None else width * 0.75 * nrows / max(ncols, 1)
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kwargs)


def save(fig, out_dir, stem: str) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` and ``.pdf`` atomically (PDF byte-stable), close the figure."""
    out_dir = Path(out_dir)
    paths = []
    for ext, kwargs in ((".png", dict(dpi=200)), (".pdf", dict(metadata={"CreationDate": None}))):
        path = out_dir / f"{stem}{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext[1:], **kwargs)
        paths.append(path)
    plt.close(fig)
    return paths


BAND_ALPHA = 0.15


def seed_curve(ax, x, c: dict, keep=None, **line_kw):
    """Draw a curve dict of ``llm.studies.tofu_results.curve_dict``: its seed mean as a line and, when more
    than one seed ran, a shaded band mean +- std in the line's colour. ``keep`` (indices) drops
    points, e.g. step 0 on a log-scale KL panel. Returns the line."""
    idx = list(range(len(x))) if keep is None else list(keep)
    xs = [x[i] for i in idx]
    (line,) = ax.plot(xs, [c["mean"][i] for i in idx], **line_kw)
    if c.get("n_seeds", 1) > 1 and idx:
        ax.fill_between(xs, [c["lo"][i] for i in idx], [c["hi"][i] for i in idx], alpha=BAND_ALPHA,
                        color=line.get_color(), linewidth=0)
    return line


#: Text tables (Fig. 7): the smallest font of the plots, so the text is legible at the printed width.
TABLE_FONTSIZE = 7.0


def chars_per_inch(fontsize: float = TABLE_FONTSIZE) -> float:
    """Characters per inch to wrap table text at: DejaVu Sans averages ~0.55 em per character;
    0.6 em keeps runs of capitals inside the cell."""
    return 72.0 / (0.6 * fontsize)
