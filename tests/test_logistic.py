"""simulations/logistic.py: the n_f-dimensional b-space iteration is exactly GD on theta."""
import numpy as np
import pytest
import torch

from simulations import logistic, tabular
from simulations.trajectory import simulate_stacked
from theory.objectives import ga_loss, log_sigmoid, npo_loss

BETAS = (0.5, 2.0)


def _b_of_theta(fs, theta):
    return fs.margin0 - fs.signs * (fs.X @ theta)


@pytest.mark.parametrize("data,labels,norm", [("gaussian", "random", 1.0), ("gaussian", "ones", 0.0),
                                              ("orthogonal", "random", 3.0)])
def test_b_space_equals_theta_space_gd(data, labels, norm):
    fs = logistic.make_forget_set(data, 8, 40, norm, labels, np.random.default_rng(3))
    steps = 300
    traj = logistic.simulate([fs], BETAS, lr=0.7, steps=steps)
    assert traj.steps[-1] == steps
    for j, beta in enumerate((None, *BETAS)):
        theta = logistic.theta_space_gd(fs, beta, lr=0.7, steps=steps)
        np.testing.assert_allclose(traj.b[0, j, -1], _b_of_theta(fs, theta), rtol=1e-10, atol=1e-12)
    # ||b|| is the X^T X norm of theta - theta_init (Theorem 2's divergence measure)
    theta = logistic.theta_space_gd(fs, None, lr=0.7, steps=steps)
    delta = theta - fs.theta_init
    assert traj.norm[0, 0, -1] == pytest.approx(np.sqrt(delta @ fs.X.T @ fs.X @ delta), rel=1e-10)


def test_b_space_equals_torch_autograd_gd_on_the_objectives():
    fs = logistic.make_forget_set("gaussian", 6, 30, 1.0, "random", np.random.default_rng(5))
    steps, lr = 15, 1.0
    traj = logistic.simulate([fs], BETAS, lr=lr, steps=steps)
    X, s = torch.tensor(fs.X), torch.tensor(fs.signs)
    logp0 = log_sigmoid(s * (X @ torch.tensor(fs.theta_init)))
    for j, beta in enumerate((None, *BETAS)):
        theta = torch.tensor(fs.theta_init, requires_grad=True)
        for _ in range(steps):
            logp = log_sigmoid(s * (X @ theta))
            loss = ga_loss(logp) if beta is None else npo_loss(logp, logp0, beta)
            (grad,) = torch.autograd.grad(loss, theta)
            theta = (theta - lr * grad).detach().requires_grad_(True)
        np.testing.assert_allclose(traj.b[0, j, -1], _b_of_theta(fs, theta.detach().numpy()),
                                   rtol=1e-10, atol=1e-12)
        # the recorded loss is the objective's value at the recorded theta
        logp = log_sigmoid(s * (X @ theta.detach()))
        expect = ga_loss(logp) if beta is None else npo_loss(logp, logp0, beta)
        assert traj.loss[0, j, -1] == pytest.approx(float(expect), rel=1e-10)


def test_seeds_are_stacked_not_mixed():
    sets = [logistic.make_forget_set("gaussian", 5, 50, rng=np.random.default_rng(s)) for s in (1, 2)]
    both = logistic.simulate(sets, BETAS, lr=1.0, steps=200)
    for k, fs in enumerate(sets):
        alone = logistic.simulate([fs], BETAS, lr=1.0, steps=200)
        np.testing.assert_allclose(both.b[k], alone.b[0], rtol=1e-12)


def test_recordings_are_consistent():
    fs = logistic.make_forget_set("orthogonal", 6, 6, rng=np.random.default_rng(0))
    traj = logistic.simulate([fs], BETAS, lr=1.0, steps=2000)
    assert np.all(traj.b[:, :, 0] == 0) and np.all(traj.weight[:, :, 0] == 1)
    assert np.all(traj.weight[:, 0] == 1)                      # GA's weight
    assert np.all((traj.weight[:, 1:] > 0) & (traj.weight[:, 1:] <= 1))  # NPO: W <= 1 once b > 0
    assert np.all(np.diff(traj.b, axis=2) >= 0)                # orthogonal: each margin drops
    assert np.all(np.diff(traj.loss, axis=2) <= 0)             # GD descends each loss
    np.testing.assert_allclose(traj.gain, 1.0)                 # |e_i|^2


def test_theorem_assumptions_report():
    fs = logistic.make_forget_set("gaussian", 10, 500, 2.0, rng=np.random.default_rng(0))
    facts = logistic.theorem_assumptions(fs, lr=1.5)
    gram = fs.X @ fs.X.T
    assert facts["coupling"] == pytest.approx(np.abs(gram[~np.eye(10, dtype=bool)]).max() * 10)
    assert facts["theta_init_norm"] == pytest.approx(2.0)
    assert facts["lr_le_1"] is False and facts["n_forget_le_dim"] is True
    ortho = logistic.theorem_assumptions(logistic.make_forget_set("orthogonal", 10, 10), lr=1.0)
    assert ortho["coupling"] == 0 and ortho["gram_min_eigenvalue"] == pytest.approx(1.0)


@pytest.mark.parametrize("call,match", [
    (lambda: logistic.make_forget_set("orthogonal", 20, 10), "dim >= n_forget"),
    (lambda: logistic.make_forget_set("sparse", 2, 10), "unknown data"),
    (lambda: logistic.make_forget_set("gaussian", 2, 10, -1.0), "theta_init_norm"),
    (lambda: logistic.simulate([logistic.make_forget_set("gaussian", 2, 4)], (0.0,), 1.0, 100), "beta"),
    (lambda: logistic.simulate([logistic.make_forget_set("gaussian", 2, 4)], (1.0,), 0.0, 100), "lr"),
    (lambda: logistic.simulate([logistic.make_forget_set("gaussian", 2, 4)], (1.0,), 1.0, 5), "steps"),
])
def test_impossible_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_million_steps_stay_finite_in_both_settings():
    sets = [logistic.make_forget_set("gaussian", 4, 64, 5.0, rng=np.random.default_rng(s)) for s in (0, 1)]
    tab = [tabular.make_forget_set(4, 5, 5.0, rng=np.random.default_rng(s)) for s in (0, 1)]
    models = [logistic.LogisticGD(sets, 1.0), tabular.TabularGD(tab, 1.0)]
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # overflow or NaN would raise
        trajs = simulate_stacked(models, (0.1, 10.0), steps=1_000_000, per_decade=10)
    for traj in trajs:
        for a in (traj.b, traj.loss, traj.weight, traj.gain):
            assert np.all(np.isfinite(a))
        k5 = int(np.searchsorted(traj.steps, 100_000))
        growth = traj.norm[:, :, -1] / traj.norm[:, :, k5]     # from t = 1e5 to 1e6
        np.testing.assert_allclose(growth[:, 0], 10.0, rtol=1e-2)   # GA: linear
        assert np.all(growth[:, 1:] < 2.0)                          # NPO: logarithmic
