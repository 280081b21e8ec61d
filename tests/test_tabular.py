"""simulations/tabular.py: the (margin, q) iteration is exactly GD on the K free logits."""
import numpy as np
import pytest
import torch

from simulations import tabular
from theory.objectives import ga_loss, log_sigmoid, npo_loss

BETAS = (0.5, 2.0)


@pytest.mark.parametrize("classes,norm", [(2, 1.0), (5, 3.0), (7, 0.0)])
def test_margin_iteration_equals_logit_space_gd(classes, norm):
    fs = tabular.make_forget_set(6, classes, norm, np.random.default_rng(classes))
    steps, lr = 400, 0.8
    traj = tabular.simulate([fs], BETAS, lr=lr, steps=steps)
    for j, beta in enumerate((None, *BETAS)):
        z = tabular.logit_space_gd(fs, beta, lr, steps)
        b = fs.margin0 - tabular.margins_of(z, fs.y)
        np.testing.assert_allclose(traj.b[0, j, -1], b, rtol=1e-10, atol=1e-11)
        # the recorded gain is 1 + |q|^2 of the logits reached
        keep = np.arange(classes)[None, :] != fs.y[:, None]
        others = z[keep].reshape(len(fs.y), -1)
        q = np.exp(others - others.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        np.testing.assert_allclose(traj.gain[0, j, -1], 1 + (q * q).sum(1), rtol=1e-9)


def test_margin_iteration_equals_torch_autograd_gd_on_the_objectives():
    fs = tabular.make_forget_set(5, 4, 1.0, np.random.default_rng(1))
    steps, lr = 12, 1.0
    traj = tabular.simulate([fs], BETAS, lr=lr, steps=steps)
    rows, y = torch.arange(5), torch.tensor(fs.y)
    logp0 = torch.log_softmax(torch.tensor(fs.logits0), 1)[rows, y]
    for j, beta in enumerate((None, *BETAS)):
        z = torch.tensor(fs.logits0, requires_grad=True)
        for _ in range(steps):
            logp = torch.log_softmax(z, 1)[rows, y]
            loss = ga_loss(logp) if beta is None else npo_loss(logp, logp0, beta)
            (grad,) = torch.autograd.grad(loss, z)
            z = (z - lr * grad).detach().requires_grad_(True)
        b = fs.margin0 - tabular.margins_of(z.detach().numpy(), fs.y)
        np.testing.assert_allclose(traj.b[0, j, -1], b, rtol=1e-10, atol=1e-12)
        # log pi(y|x) = log sigma(margin): the loss recorded is the objective's
        logp = log_sigmoid(torch.tensor(fs.margin0 - traj.b[0, j, -1]))
        expect = ga_loss(logp) if beta is None else npo_loss(logp, logp0, beta)
        assert traj.loss[0, j, -1] == pytest.approx(float(expect), rel=1e-9)


def test_gain_is_two_for_binary_and_tends_to_two_under_ga():
    binary = tabular.simulate([tabular.make_forget_set(4, 2)], BETAS, lr=1.0, steps=100)
    np.testing.assert_allclose(binary.gain, 2.0)
    many = tabular.simulate([tabular.make_forget_set(4, 6)], BETAS, lr=1.0, steps=20_000)
    assert many.gain[0, 0, 0].max() < 1.5 and many.gain[0, 0, -1].min() > 2 - 1e-6
    assert many.gain[0, 1:, -1].max() < 2 - 1e-3    # NPO moves q only logarithmically


def test_long_runs_stay_finite_and_monotone():
    fs = tabular.make_forget_set(3, 5, 10.0, np.random.default_rng(2))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        traj = tabular.simulate([fs], (0.05, 20.0), lr=1.0, steps=50_000, per_decade=10)
    assert np.all(np.isfinite(traj.b)) and np.all(np.isfinite(traj.loss))
    assert np.all(np.diff(traj.b, axis=2) >= 0)


def test_impossible_inputs_raise():
    with pytest.raises(ValueError, match="classes >= 2"):
        tabular.make_forget_set(3, 1)
    with pytest.raises(ValueError, match="beta"):
        tabular.simulate([tabular.make_forget_set(3, 3)], (-1.0,), 1.0, 100)
