"""llm.train.methods: the registered losses against theory/ (values, autograd gradients) and the paper's code."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from llm.data.formatting import collate, encode_qa
from llm.train.methods import REGISTRY, Inputs, get, resolve_hparams
from llm.models import load_model_and_tokenizer, sequence_logprob, token_counts
from theory import objectives as ob
from theory.derivations import npo as npo_theory
from theory.derivations._tools import beta as BETA, pi as PI, pi_ref as PI_REF

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def loss(name, x, **hp):
    """The method's loss at its defaults, ``hp`` overriding them."""
    return get(name).loss(x, **{**get(name).hparams, **hp})


def needs(name):
    return get(name).needs


PAPER_METHODS = {"ga", "ga_rt", "ga_kl", "idk_rt", "dpo", "dpo_rt", "dpo_kl", "kto", "kto_rt",
                 "npo", "npo_rt", "npo_kl", "simnpo"}


def _inputs(seed=0, b=6, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    def logp():
        return (-30 * torch.rand(b, generator=g, dtype=dtype) - 1).requires_grad_(grad)
    tokens = torch.randint(5, 40, (b,), generator=g)
    return Inputs(forget_logp=logp(), forget_tokens=tokens, forget_ref=logp().detach(),
                      retain_logp=logp(), retain_tokens=tokens.flip(0), idk_logp=logp(),
                      idk_tokens=tokens + 1, idk_ref=logp().detach(),
                      retain_kl=torch.rand(17, generator=g, dtype=dtype))


def test_registry_covers_the_paper_and_declares_needs():
    assert PAPER_METHODS <= set(REGISTRY)
    for name in [n for n in REGISTRY if needs(n) <= {"ref", "idk", "retain", "kl"}]:  # per-sequence inputs
        out = loss(name, _inputs())
        assert set(out) == {"loss", "forget_loss", "retain_loss"} and torch.isfinite(out["loss"])
    assert needs("npo") == {"ref"} and needs("npo_kl") == {"ref", "kl"}
    assert "ref" not in needs("ga_rt") and "ref" not in needs("simnpo")
    assert {m for m in REGISTRY if "kl" in needs(m)} == {"ga_kl", "npo_kl", "dpo_kl"}


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_npo_loss_and_autograd_gradient_match_theory(beta):
    x = _inputs(seed=1)
    out = loss("npo", x, beta=beta)
    lp, lr = x.forget_logp.detach().numpy(), x.forget_ref.numpy()
    # value: Eq. 3 in its ratio form, evaluated by sympy per sample and averaged
    ratio_form = sp.lambdify((PI, PI_REF, BETA), npo_theory.npo_loss_ratio(), "mpmath")
    expected = np.mean([float(ratio_form(sp.exp(a), sp.exp(b), beta)) for a, b in zip(lp, lr)])
    assert out["loss"].item() == pytest.approx(expected, rel=1e-10)
    # gradient: dL/dlogp_i = W_i / B with W = 2 pi^beta / (pi^beta + pi_ref^beta) (Eqs. 4-5)
    out["loss"].backward()
    weight = sp.lambdify((PI, PI_REF, BETA), npo_theory.npo_weight_ratio(), "mpmath")
    w = np.array([float(weight(sp.exp(a), sp.exp(b), beta)) for a, b in zip(lp, lr)])
    np.testing.assert_allclose(x.forget_logp.grad.numpy(), w / len(w), rtol=1e-10)
    np.testing.assert_allclose(w, ob.npo_weight(lp, lr, beta), rtol=1e-12)


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=3)
    from llm.data.tofu import load_split
    rows = load_split("forget01", tofu_dir)[:4]
    batch = collate([encode_qa(tok, r["question"], r["answer"], "llama2") for r in rows], tok.pad_token_id)
    return model, tok, batch


@pytest.mark.slow
def test_npo_parameter_gradient_is_weighted_ga_gradient(tiny):
    """grad L_NPO = mean_i W_i grad log pi(y_i|x_i) on a real model, away from the reference."""
    model, _, batch = tiny
    beta = 0.5
    logp = sequence_logprob(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                            batch["labels"])
    ref = logp.detach() + torch.tensor([2.0, -1.0, 0.5, 0.0])  # R != 0, so W != 1
    x = Inputs(forget_logp=logp, forget_tokens=token_counts(batch["labels"]), forget_ref=ref)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss("npo", x, beta=beta)["loss"], params, retain_graph=True)
    w = ob.npo_weight(logp.detach(), ref, beta)
    per_sample = [torch.autograd.grad(logp[i], params, retain_graph=True) for i in range(len(logp))]
    for k, g in enumerate(grads):
        expected = sum(w[i] * per_sample[i][k] for i in range(len(logp))) / len(logp)
        # float32 model (HF's RMSNorm/rotary compute in float32 even for float64 weights)
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_ga_and_retain_terms_are_hf_token_mean_losses(tiny):
    """The paper's code uses model(**batch).loss (token-mean CE) for GA, IDK and RT terms."""
    model, _, batch = tiny
    with torch.no_grad():
        out = model(**batch)
    logp, tokens = sequence_logprob(out.logits, batch["labels"]), token_counts(batch["labels"])
    x = Inputs(forget_logp=logp, forget_tokens=tokens, retain_logp=logp, retain_tokens=tokens)
    assert loss("ga", x)["loss"].item() == pytest.approx(-out.loss.item(), rel=1e-5)
    parts = loss("ga_rt", x, forget_weight=2.0, retain_weight=3.0)
    assert parts["retain_loss"].item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(-2 * out.loss.item() + 3 * out.loss.item(), rel=1e-5)


def test_kl_term_matches_torch_kl_div(tiny):
    model, _, batch = tiny
    with torch.no_grad():
        cur = model(**batch).logits
    ref = cur + 0.3 * torch.randn(cur.shape, generator=torch.Generator().manual_seed(0))
    keep = batch["attention_mask"].bool()
    lc, lr = torch.log_softmax(cur[keep], -1), torch.log_softmax(ref[keep], -1)
    x = Inputs(forget_logp=torch.zeros(4), forget_tokens=torch.ones(4), forget_ref=torch.zeros(4),
                   retain_kl=ob.kl_categorical(lr, lc))
    expected = F.kl_div(lc, lr, reduction="batchmean", log_target=True)  # legacy TOFU's KL term
    assert loss("npo_kl", x)["retain_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_preference_methods_against_hand_formulas():
    x, beta = _inputs(seed=2), 0.3
    lw, ll = x.idk_logp.detach().double(), x.forget_logp.detach().double()
    rw, rl = x.idk_ref.double(), x.forget_ref.double()
    dpo = -(2 / beta) * torch.log(torch.sigmoid(beta * ((lw - rw) - (ll - rl)))).mean()
    assert loss("dpo", x, beta=beta)["loss"].item() == pytest.approx(dpo.item(), rel=1e-10)
    z = max(0.0, beta * (lw - rw).mean().item())
    kto = (2 / beta) * torch.log1p(torch.exp(beta * (ll - rl) - z)).mean()
    assert loss("kto", x, beta=beta)["loss"].item() == pytest.approx(kto.item(), rel=1e-10)
    simnpo = (2 / beta) * torch.log1p(torch.exp(beta * (ll / x.forget_tokens + 0.1))).mean()
    assert loss("simnpo", x, beta=beta, forget_weight=1.0, delta=0.1)["loss"].item() == \
        pytest.approx(simnpo.item(), rel=1e-10)
    # weights scale their terms; NPO at the reference has W = 1, i.e. GA on summed log-probs
    y = _inputs(seed=3)
    y.forget_ref = y.forget_logp.detach().clone()
    loss("npo", y, beta=beta, forget_weight=0.5)["loss"].backward()
    np.testing.assert_allclose(y.forget_logp.grad.numpy(), 0.5 / len(y.forget_logp))


def test_bad_hyperparameters_name_the_fix():
    with pytest.raises(ValueError, match="unknown method 'npx'.*npo_rt"):
        get("npx")
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta must be > 0.*--method ga"):
            resolve_hparams(get("npo"), {"beta": bad})
    assert "beta" not in get("ga").hparams  # GA has no beta
