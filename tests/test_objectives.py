"""The numeric objectives: numpy and torch agree, and autograd matches the closed-form gradients."""
import numpy as np
import pytest
import torch

from theory import objectives as ob


def test_numpy_and_torch_backends_agree():
    rng = np.random.default_rng(0)
    logp, ref = rng.normal(-5, 3, 64), rng.normal(-5, 3, 64)
    for beta in (0.01, 0.1, 1.0, 10.0):
        a = ob.npo_loss(logp, ref, beta)
        b = ob.npo_loss(torch.tensor(logp), torch.tensor(ref), beta).item()
        assert a == pytest.approx(b, rel=1e-12)


def test_npo_autograd_gradient_is_weight_times_grad_logp():
    torch.manual_seed(0)
    logp = torch.randn(32, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(32, dtype=torch.float64)
    for beta in (0.05, 1.0, 7.0):
        (g,) = torch.autograd.grad(ob.npo_loss(logp, ref, beta), logp)
        w = ob.npo_weight(logp.detach(), ref, beta)
        torch.testing.assert_close(g, w / 32, rtol=1e-12, atol=1e-15)


def test_npo_is_finite_for_extreme_ratios():
    r = np.array([-1e6, -50.0, 0.0, 50.0, 1e6])
    assert np.all(np.isfinite(ob.npo_loss(r, np.zeros_like(r), 1.0)))
    assert np.all(np.isfinite(ob.npo_weight(r, np.zeros_like(r), 1.0)))


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta must be > 0"):
        ob.npo_loss(np.zeros(2), np.zeros(2), 0.0)
