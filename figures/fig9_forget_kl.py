"""Reproduces Figure 9 (App. B.1): forget KL, E_forget KL(pi_ref || pi_theta), vs steps, alpha = 1 and 0.

    python -m figures.fig9_forget_kl [--quick] [--out figures/out] [--force] [--results results]

Same runs as Figure 4 (``simulations.synthetic.fig4_data``, cached). Lines are means over
seeds with +-1 sd bands, markers medians. Writes ``fig9_forget_kl.png/.pdf``.
"""
from __future__ import annotations

from simulations.synthetic import FitNotConverged, fig4_data

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, save
from figures.synthetic_common import band_legend, curve_with_band

STEM = "fig9_forget_kl"


def plot(res: dict, out_dir):
    alphas = list(res["alphas"])
    fig, axes = figure(ncols=2, nrows=1, width=TWO_COLUMN, height=3.0)
    for ax, alpha, tag in zip(axes[0], (1.0, 0.0), "ab"):
        if alpha not in alphas:
            ax.set_axis_off()
            continue
        a = alphas.index(alpha)
        for j, m in enumerate(res["methods"]):
            curve_with_band(ax, res["steps"], res["fkl"][a, :, :, j], str(m))
        ax.set(title=f"({tag}) forget KL, alpha={alpha:g}", xlabel="step", ylabel="KL(reference || model)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    band_legend(fig, handles, labels)
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.fig9_forget_kl", doc=__doc__, compute=fig4_data,
                       plot=plot, failures=(FitNotConverged,))


if __name__ == "__main__":
    raise SystemExit(main())
