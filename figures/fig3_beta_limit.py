"""Reproduces Figure 3: NPO tends to GA as beta -> 0 (synthetic, alpha = 1, lr 5e-4, 10000 steps).

    python -m figures.fig3_beta_limit [--quick] [--out figures/out] [--force] [--results results]

(a) retain vs forget distance of GA and NPO with beta in {0.01, 0.1, 0.2, 0.5, 1}, evaluated every
5 steps and averaged over seeds as in the paper; (b) the same curves seed by seed for GA and
beta = 1, which lie much closer together than the seed means suggest. Data:
``simulations.synthetic.fig3_data`` (cached). Writes ``fig3_beta_limit.png/.pdf``.
"""
from __future__ import annotations


from simulations.synthetic import FitNotConverged, fig3_data

from figures.cli import figure_main
from figures.style import TWO_COLUMN, figure, method_style, npo_beta_style, save

STEM = "fig3_beta_limit"


def _style(label: str, j: int, n: int) -> dict:
    """GA in its colour; NPO(beta) (labels 1..n-1) in NPO's colour, lighter for smaller beta."""
    if label == "GA":
        return method_style("GA", marker=None, linewidth=1.6)
    return npo_beta_style(j - 1, n - 1, fade=0.75, linewidth=1.1)


def plot(res: dict, out_dir):
    labels = [str(m) for m in res["methods"]]
    fd, rd = res["fd"][0], res["rd"][0]  # (S, T, M)
    fig, axes = figure(ncols=2, nrows=1, width=TWO_COLUMN, height=2.8)
    mean_ax, seed_ax = axes[0]
    for j, label in enumerate(labels):
        mean_ax.plot(fd.mean(0)[:, j], rd.mean(0)[:, j], label=label, **_style(label, j, len(labels)))
    for j in (0, len(labels) - 1):
        for s in range(fd.shape[0]):
            seed_ax.plot(fd[s, :, j], rd[s, :, j], label=labels[j] if s == 0 else None,
                         **dict(_style(labels[j], j, len(labels)), linewidth=0.8))
    mean_ax.set(title=f"(a) mean over {fd.shape[0]} seeds (as the paper)", xlabel="forget distance",
                ylabel="retain distance", xlim=(0, 0.3), ylim=(0, 0.3))
    seed_ax.set(title="(b) each seed: GA and the largest beta", xlabel="forget distance", xlim=(0, 0.3),
                ylim=(0, 0.3))
    mean_ax.legend(frameon=False, fontsize=6)
    seed_ax.legend(frameon=False, fontsize=6)
    return save(fig, out_dir, STEM)


def main(argv=None) -> int:
    return figure_main(argv, prog="python -m figures.fig3_beta_limit", doc=__doc__, compute=fig3_data,
                       plot=plot, failures=(FitNotConverged,))


if __name__ == "__main__":
    raise SystemExit(main())
