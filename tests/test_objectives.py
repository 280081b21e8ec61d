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


# ---- open-unlearning's token-level objectives: closed-form gradients -----------------------------

def _tokens(seed=0, b=3, t=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 4
    mask = torch.rand(b, t, generator=g) > 0.3
    return logp.requires_grad_(True), mask


def test_wga_gradient_is_the_detached_probability_weight_per_answer_token():
    logp, mask = _tokens()
    for beta in (0.0, 0.5, 1.0, 3.0):
        (g,) = torch.autograd.grad(ob.wga_loss(logp, mask, beta), logp)
        expected = torch.where(mask, logp.detach().exp() ** beta, 0.0) / mask.sum()
        torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-15)
    # beta = 0: the token-mean log-prob, i.e. GA's forget term with its sign
    assert ob.wga_loss(logp, mask, 0.0).item() == pytest.approx(logp[mask].mean().item(), rel=1e-12)


def test_satimp_weight_is_saturation_times_importance_and_beta2_0_is_wga():
    logp, mask = _tokens(1)
    p = logp.detach().exp()
    (g,) = torch.autograd.grad(ob.satimp_loss(logp, mask, 5.0, 1.0), logp)
    torch.testing.assert_close(g, torch.where(mask, p ** 5 * (1 - p), 0.0) / mask.sum(), rtol=1e-12, atol=1e-15)
    assert ob.satimp_loss(logp, mask, 2.0, 0.0).item() == pytest.approx(ob.wga_loss(logp, mask, 2.0).item(), rel=1e-12)


def _logits(seed=0, n=5, v=11):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, v, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    return z, torch.randint(0, v, (n,), generator=g)


def test_ceu_gradient_is_softmax_minus_the_target_without_the_true_token():
    z, y = _logits()
    (g,) = torch.autograd.grad(ob.ceu_loss(z, y), z)
    q = z.detach().softmax(-1).scatter(-1, y[:, None], 0.0)
    q = q / q.sum(-1, keepdim=True)
    torch.testing.assert_close(g.double(), (z.detach().softmax(-1) - q) / len(y), rtol=1e-6, atol=1e-8)
    # the true token's gradient is its whole probability: CE-U only ever lowers it
    assert torch.all(g.gather(-1, y[:, None]) > 0)


def test_undial_gradient_is_softmax_minus_the_penalised_reference():
    z, y = _logits(2)
    ref = torch.randn(z.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for beta in (0.0, 1.0, 10.0):
        (g,) = torch.autograd.grad(ob.undial_loss(z, ref, y, beta), z)
        penalised = ref.clone()
        penalised[torch.arange(len(y)), y] -= beta
        torch.testing.assert_close(g.double(), (z.detach().softmax(-1) - penalised.softmax(-1)) / len(y),
                                   rtol=1e-6, atol=1e-8)
    # beta = 0 from the model itself: the target is the model, the gradient vanishes
    (g,) = torch.autograd.grad(ob.undial_loss(z, z.detach(), y, 0.0), z)
    assert g.abs().max() < 1e-7
