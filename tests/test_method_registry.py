"""llm.methods: the 14 methods moved onto the registry give bit-identical losses and gradients to
the pre-registry code (tests/legacy_losses.py, frozen at e7bb867), and a micro unlearning run logs
the same losses; the registry's bookkeeping (needs, labels, hyper-parameters, the CLI's errors)."""
from __future__ import annotations

import json

import pytest
import torch

import legacy_losses as legacy
from llm.methods import PAPER_GRID, REGISTRY, Inputs, by_label, get, resolve_hparams

FLOATS = ("forget_logp", "forget_ref", "retain_logp", "idk_logp", "idk_ref", "retain_kl")
#: a non-default value for each hyper-parameter the 14 methods declare
OTHER = {"beta": 0.37, "forget_weight": 0.6, "retain_weight": 2.5, "delta": 0.2}


def _tensors(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {name: (torch.randn(5, generator=g, dtype=dtype) * 3 - 20) for name in FLOATS}
    t["retain_kl"] = torch.rand(17, generator=g, dtype=dtype)
    t["forget_ref"] = t["forget_logp"] + torch.randn(5, generator=g, dtype=dtype)
    t["idk_ref"] = t["idk_logp"] + torch.randn(5, generator=g, dtype=dtype)
    for k in ("forget_tokens", "retain_tokens", "idk_tokens"):
        t[k] = torch.randint(3, 30, (5,), generator=g)
    for k in FLOATS:
        t[k].requires_grad_(True)
    return t


def _parts_and_grads(fn, cls, t):
    out = fn(cls(**t))
    grads = torch.autograd.grad(out["loss"], [t[k] for k in FLOATS], allow_unused=True)
    return out, dict(zip(FLOATS, grads))


def test_registration_order_labels_and_needs_are_todays():
    assert list(REGISTRY) == list(legacy.METHODS)  # --method's choices and every list keep their order
    for name, m in REGISTRY.items():
        assert m.needs == legacy.METHODS[name].needs, name
        assert get(name) is m and by_label(m.label) is m
    assert {m.label for m in REGISTRY.values()} >= set(PAPER_GRID)
    assert by_label("NPO+RT").name == "npo_rt" and by_label("IDK+RT").name == "idk_rt"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(legacy.METHODS))
@pytest.mark.parametrize("which", ["default", "other"])
def test_loss_and_gradients_are_bit_identical_to_the_legacy_code(name, dtype, which):
    m = REGISTRY[name]
    hp = dict(m.hparams) if which == "default" else {k: OTHER[k] for k in m.hparams}
    # legacy: its own signature defaults at "default" (so the registry's defaults are checked too)
    legacy_kw = {} if which == "default" else hp
    t = _tensors(dtype)
    new, new_g = _parts_and_grads(lambda x: m.loss(x, **hp), Inputs, t)
    old, old_g = _parts_and_grads(lambda x: legacy.METHODS[name](x, **legacy_kw), legacy.LossInputs, t)
    for k in ("loss", "forget_loss", "retain_loss"):
        assert new[k].dtype == old[k].dtype == dtype
        assert torch.equal(new[k], old[k]), (k, new[k], old[k])
        assert new[k].requires_grad == old[k].requires_grad
    for k in FLOATS:
        assert (new_g[k] is None) == (old_g[k] is None), k
        if old_g[k] is not None:
            assert torch.equal(new_g[k], old_g[k]), k
    # the comparison has teeth: some input moves the loss
    assert any(g is not None and g.abs().sum() > 0 for g in new_g.values())


def test_a_planted_difference_is_seen():
    """The equality above is exact: one ulp of beta changes NPO's loss bits."""
    t = _tensors(torch.float64)
    a = REGISTRY["npo"].loss(Inputs(**t), beta=0.1, forget_weight=1.0)["loss"]
    b = legacy.METHODS["npo"](legacy.LossInputs(**t), beta=0.1 + 2 ** -56)["loss"]
    assert not torch.equal(a, b)


def test_hparams_resolve_by_name_with_the_method_defaults():
    assert resolve_hparams(get("simnpo"), {}) == {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125}
    assert resolve_hparams(get("npo_rt"), {"beta": "0.5"})["beta"] == 0.5  # --hp strings parse
    with pytest.raises(ValueError, match="npo has no hyper-parameter 'gamma'; its --hp names are beta"):
        resolve_hparams(get("npo"), {"gamma": 1})
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta must be > 0 for npo"):
            resolve_hparams(get("npo"), {"beta": bad})
    with pytest.raises(ValueError, match="expected a float"):
        resolve_hparams(get("npo"), {"beta": "x"})
    with pytest.raises(ValueError, match="unknown method 'npx'; use one of ga, ga_rt"):
        get("npx")
