"""figures/fig_collapse_rate.py draws what simulations.theorem2 computed, predictions included."""
from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from figures import fig_collapse_rate as fig
from simulations import theorem2
from theory import predictions as pr


@pytest.fixture(scope="module")
def data():
    cfg = replace(theorem2.Config(), n_forget=5, dim=50, steps=2000, seeds=2, beta=(1.0,))
    trajs = theorem2.simulate_settings(cfg, theorem2.SETTINGS, results=None)
    return cfg, trajs, theorem2.figure_data(trajs)


def test_predicted_lines_are_theorem_2s(data):
    cfg, trajs, d = data
    logistic = d["logistic"]
    traj = trajs[0]
    t = logistic["steps"]
    # orthogonal unit inputs: gain |x_i|^2 = 1; GA's leading-order b_i(t) = eta t / n_f - e^{m0_i}
    ga = np.mean([np.linalg.norm(pr.ga_logit_change(t, cfg.lr, cfg.n_forget, m0, 1.0), axis=1)
                  for m0 in traj.margin0], axis=0)
    np.testing.assert_allclose(logistic["predicted"][0], ga, rtol=1e-10)
    npo = np.mean([np.linalg.norm(pr.npo_logit_change(t, cfg.lr, cfg.n_forget, 1.0, m0, 1.0), axis=1)
                   for m0 in traj.margin0], axis=0)
    np.testing.assert_allclose(logistic["predicted"][1], npo, rtol=1e-10)
    np.testing.assert_allclose(logistic["mean"], traj.norm[:, :, 1:].mean(0))


def test_the_figure_draws_the_computed_series(data, tmp_path, monkeypatch):
    _, _, d = data
    drawn = []
    monkeypatch.setattr(fig, "save", lambda f, out, stem: drawn.append(f) or [])
    fig.plot(d, tmp_path)
    (figure,) = drawn
    for row, setting in enumerate(d):
        ax = figure.axes[2 * row]
        grey = [ln for ln in ax.get_lines() if ln.get_color() == fig.PREDICTION["color"]]
        measured = [ln for ln in ax.get_lines() if ln not in grey]
        assert len(grey) == len(measured) == len(d[setting]["labels"])
        for j, (g, m) in enumerate(zip(grey, measured)):
            np.testing.assert_array_equal(g.get_ydata(), d[setting]["predicted"][j])
            np.testing.assert_array_equal(m.get_ydata(), d[setting]["mean"][j])
            assert g.get_zorder() < m.get_zorder() and g.get_linewidth() < m.get_linewidth()
        assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "NPO β=1"
    plt.close(figure)
