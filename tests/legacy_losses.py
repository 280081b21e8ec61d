# FROZEN ORACLE: the pre-registry llm/train/losses.py at commit e7bb867, copied verbatim below this
# header and kept only as tests/test_method_registry.py's oracle (the 14 methods must give
# bit-identical losses and gradients through llm.train.methods). Do not edit; product code never imports it.
"""Unlearning objectives on causal LMs: a plain dict registry of small pure functions.

    from llm.train.losses import METHODS, LossInputs
    parts = METHODS["npo_rt"](LossInputs(forget_logp=..., forget_tokens=..., forget_ref=...,
                                         retain_logp=..., retain_tokens=...), beta=0.1)
    parts["loss"].backward()

Every formula comes from ``theory/objectives.py``; this module only decides which per-sequence
quantities feed which loss, exactly as the paper's TOFU code does (tofu-notes section 5):
* NPO, DPO, KTO and SimNPO act on per-sequence log-probs SUMMED over answer tokens;
* the GA forget term, the IDK term and the retain term (RT) are HF-style token-mean NLLs over the
  micro-batch (``model(**batch).loss`` in the authors' code);
* the KL retain term is the token-averaged KL(ref || theta) on retain inputs (masked to real
  tokens; the authors' code also averages over padding positions).
``forget_weight`` multiplies the forget term, ``retain_weight`` the retain/KL term.

Each function carries ``.needs``: which inputs it reads ("ref": reference log-probs of the forget
answers; "idk": the IDK answers and their reference; "retain": retain NLL; "kl": live reference
on retain). The trainer computes only what is needed; only "kl" requires a live reference model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.models import token_mean_logp  # fine-tuning's loss uses it too (llm/train/loop.py)
from theory.objectives import (TABLE2_WEIGHTS, dpo_loss, ga_family_loss, ga_loss, kto_loss,
                               nll_loss, npo_loss, simnpo_loss)

__all__ = ["LossInputs", "METHODS", "METHOD_DEFAULTS", "method_defaults", "token_mean_logp",
           "kto_z_ref", "needs"]


@dataclass
class LossInputs:
    """Per-sequence quantities of one micro-batch ([B] tensors; None when a method does not need them)."""
    forget_logp: torch.Tensor                     # sum of log pi_theta over forget answer tokens
    forget_tokens: torch.Tensor                   # number of those tokens
    forget_ref: torch.Tensor | None = None        # same sum under the reference (cached or live)
    retain_logp: torch.Tensor | None = None
    retain_tokens: torch.Tensor | None = None
    idk_logp: torch.Tensor | None = None          # same question, an "I don't know" answer
    idk_tokens: torch.Tensor | None = None
    idk_ref: torch.Tensor | None = None
    retain_kl: torch.Tensor | None = None         # [N] per retain token KL(ref || theta)


#: Per-method hyper-parameter defaults (open-unlearning's SimNPO: beta 4.5, gamma 0.125).
METHOD_DEFAULTS = {"beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "delta": 0.0}
_OVERRIDES = {"simnpo": {"beta": 4.5, "forget_weight": 0.125},
              "simnpo_rt": {"beta": 4.5, "forget_weight": 0.125}}

METHODS: dict = {}


def method_defaults(name: str) -> dict:
    return {**METHOD_DEFAULTS, **_OVERRIDES.get(name, {})}


def needs(name: str) -> frozenset:
    return METHODS[name].needs


def _register(name: str, *need: str):
    def wrap(fn):
        fn.needs = frozenset(need)
        METHODS[name] = fn
        return fn
    return wrap


def kto_z_ref(x: LossInputs, beta: float) -> torch.Tensor:
    """KTO's z_ref = beta * KL(pi || pi_ref), estimated (paper App. E.1.3) as the mean log-ratio on
    (forget question, IDK answer) pairs, clamped at 0 and detached, as in KTO/TRL."""
    return (beta * (x.idk_logp - x.idk_ref).mean()).clamp(min=0).detach()


# ---- building blocks (each one theory/ function applied to the right inputs) --------------------

def _retain_nll(x):
    return nll_loss(token_mean_logp(x.retain_logp, x.retain_tokens))


def _retain_kl(x):
    return x.retain_kl.mean()


def _npo(x, beta):
    return npo_loss(x.forget_logp, x.forget_ref, beta)


def _dpo(x, beta):  # IdkDPO: win = IDK answer, lose = the true forget answer
    return dpo_loss(x.idk_logp, x.forget_logp, x.idk_ref, x.forget_ref, beta)


def _kto(x, beta):
    return kto_loss(x.forget_logp, x.forget_ref, beta, kto_z_ref(x, beta))


def _simnpo(x, beta, delta):
    return simnpo_loss(x.forget_logp, x.forget_tokens.to(x.forget_logp.dtype), beta, delta)


def _out(forget, retain, forget_weight, retain_weight):
    zero = torch.zeros((), dtype=forget.dtype, device=forget.device)
    retain = zero if retain is None else retain
    return {"loss": forget_weight * forget + retain_weight * retain,
            "forget_loss": forget.detach(), "retain_loss": retain.detach()}


# ---- GA family: Eq. 17 with Table 2's coefficients ----------------------------------------------

def _ga_family(name, x, forget_weight, retain_weight):
    c_ga, c_fg, c_rt, c_fgkl, c_rtkl = TABLE2_WEIGHTS[name]
    zero = torch.zeros((), dtype=x.forget_logp.dtype, device=x.forget_logp.device)
    l_ga = ga_loss(token_mean_logp(x.forget_logp, x.forget_tokens)) if c_ga else zero
    l_fg = nll_loss(token_mean_logp(x.idk_logp, x.idk_tokens)) if c_fg else zero
    l_rt = _retain_nll(x) if c_rt else zero
    k_rt = _retain_kl(x) if c_rtkl else zero
    weights = (forget_weight * c_ga, forget_weight * c_fg, retain_weight * c_rt, c_fgkl,
               retain_weight * c_rtkl)
    loss = ga_family_loss(weights, l_ga, l_fg, l_rt, zero, k_rt)
    forget = l_ga if c_ga else l_fg
    retain = l_rt if c_rt else k_rt
    return {"loss": loss, "forget_loss": forget.detach(), "retain_loss": retain.detach()}


@_register("ga")
def ga(x, beta=None, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _ga_family("ga", x, forget_weight, retain_weight)


@_register("ga_rt", "retain")
def ga_rt(x, beta=None, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _ga_family("ga_rt", x, forget_weight, retain_weight)


@_register("ga_kl", "kl")
def ga_kl(x, beta=None, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _ga_family("ga_kl", x, forget_weight, retain_weight)


@_register("idk_rt", "idk", "retain")
def idk_rt(x, beta=None, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _ga_family("idk_rt", x, forget_weight, retain_weight)


# ---- preference-style methods ------------------------------------------------------------------

@_register("npo", "ref")
def npo(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_npo(x, beta), None, forget_weight, retain_weight)


@_register("npo_rt", "ref", "retain")
def npo_rt(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_npo(x, beta), _retain_nll(x), forget_weight, retain_weight)


@_register("npo_kl", "ref", "kl")
def npo_kl(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_npo(x, beta), _retain_kl(x), forget_weight, retain_weight)


@_register("dpo", "ref", "idk")
def dpo(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_dpo(x, beta), None, forget_weight, retain_weight)


@_register("dpo_rt", "ref", "idk", "retain")
def dpo_rt(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_dpo(x, beta), _retain_nll(x), forget_weight, retain_weight)


@_register("dpo_kl", "ref", "idk", "kl")
def dpo_kl(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_dpo(x, beta), _retain_kl(x), forget_weight, retain_weight)


@_register("kto", "ref", "idk")
def kto(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_kto(x, beta), None, forget_weight, retain_weight)


@_register("kto_rt", "ref", "idk", "retain")
def kto_rt(x, beta=0.1, forget_weight=1.0, retain_weight=1.0, delta=0.0):
    return _out(_kto(x, beta), _retain_nll(x), forget_weight, retain_weight)


@_register("simnpo")
def simnpo(x, beta=4.5, forget_weight=0.125, retain_weight=1.0, delta=0.0):
    return _out(_simnpo(x, beta, delta), None, forget_weight, retain_weight)


@_register("simnpo_rt", "retain")
def simnpo_rt(x, beta=4.5, forget_weight=0.125, retain_weight=1.0, delta=0.0):
    """open-unlearning's SimNPO (a GradDiff subclass): SimNPO forget term + retain NLL."""
    return _out(_simnpo(x, beta, delta), _retain_nll(x), forget_weight, retain_weight)


def check_hparams(method: str, beta: float) -> None:
    """Raise ValueError with the fix for an unknown method or beta <= 0 (for beta-using methods)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if not method.startswith(("ga", "idk")) and not (beta is not None and beta > 0):
        raise ValueError(f"beta must be > 0 for {method} (got {beta}); use --method ga for the "
                         f"beta -> 0 limit of NPO")
