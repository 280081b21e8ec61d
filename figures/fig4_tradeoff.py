"""Reproduces Figure 4: synthetic forget/retain trade-off of GA, GA+RT, IDK+RT, NPO, NPO+RT, DPO+RT.

    python -m figures.fig4_tradeoff [--quick] [--out figures/out] [--force] [--results results]

Panels: (a1) forget distance KL(pi_retr || pi_theta) vs steps, (a2) retain distance vs steps,
(a3) retain vs forget distance (seed means, as the paper), all alpha = 1; (b) forget distance vs
steps at alpha = 0. Lines are means over seeds with +-1 sd bands; markers are medians (one seed of
five has a retrained model that extrapolates onto the forget region and dominates late means).
Data: ``simulations.synthetic.fig4_data`` (cached; shared with Figure 9). Writes
``fig4_tradeoff.png/.pdf``.
"""
from __future__ import annotations

from simulations.synthetic import FitNotConverged, fig4_data

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, method_style, save
from figures.synthetic_common import band_legend, curve_with_band

STEM = "fig4_tradeoff"


def plot(res: dict, out_dir):
    fig, axes = figure(ncols=2, nrows=2, width=TWO_COLUMN, height=5.4)
    (a1, a2), (a3, b) = axes
    steps, methods = res["steps"], [str(m) for m in res["methods"]]
    alphas = list(res["alphas"])
    a = alphas.index(1.0)
    for j, m in enumerate(methods):
        curve_with_band(a1, steps, res["fd"][a, :, :, j], m)
        curve_with_band(a2, steps, res["rd"][a, :, :, j], m)
        style = method_style(m)
        style.pop("marker")
        a3.plot(res["fd"][a, :, :, j].mean(0), res["rd"][a, :, :, j].mean(0), label=m, **style)
        if 0.0 in alphas:
            curve_with_band(b, steps, res["fd"][alphas.index(0.0), :, :, j], m)
    n = res["fd"].shape[1]
    a1.set(title=f"(a1) forget distance, alpha=1 ({n} seeds)", xlabel="step", ylabel="KL(retrained || model)")
    a2.set(title="(a2) retain distance, alpha=1", xlabel="step", ylim=(0, 0.3))
    a3.set(title="(a3) retain vs forget distance, alpha=1 (seed means)", xlabel="forget distance",
           ylabel="retain distance", xlim=(0, 0.35), ylim=(0, 0.15))
    b.set(title="(b) forget distance, alpha=0", xlabel="step")
    handles, labels = a1.get_legend_handles_labels()
    band_legend(fig, handles, labels)
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.fig4_tradeoff", doc=__doc__, compute=fig4_data,
                       plot=plot, failures=(FitNotConverged,))


if __name__ == "__main__":
    raise SystemExit(main())
