"""The method registry's API: what one micro-batch offers a loss (``Inputs``), what a method
declares (``Method``), the registry (``REGISTRY``, ``register``, ``get``) and the helpers that
compose a forget term with a regulariser (none, RT, KL). Importing the registry imports no torch
(the figures and the results reader read labels and colours from it); the losses do at call time.

A method is one module in llm/train/methods/ that registers its variants, e.g. (llm/train/methods/npo.py)

    register(compose("npo_rt", "NPO+RT", "npo", npo_term, "rt", {"beta": 0.1}, {"ref"}, "#009E73", "--"))

and is imported by llm/train/methods/__init__.py (that import list is the registration line). Its
hyper-parameters (``Method.hparams``: the only place their names and defaults are declared) reach
``loss`` by keyword; the trainer builds ``Inputs`` with only the fields ``needs`` names
(llm/train/unlearning.py ``INPUT_BUILDERS``). Every formula comes from theory/objectives.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from theory.objectives import nll_loss

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Inputs", "Method", "REGISTRY", "NEEDS", "register", "get", "by_label", "compose",
           "combine", "retain_nll", "retain_kl", "REGULARISERS", "HPARAM_CHECKS", "resolve_hparams"]



@dataclass
class Inputs:
    """One micro-batch; a field is None unless the method's ``needs`` asks for it. [B] per sequence,
    [B, T] per position in the logits' convention (llm.models.label_positions: position t holds
    what predicts token t + 1), [N, ...] at the N answer positions, row-major over the mask."""
    # per sequence ("ref": forget_ref and, with "idk", idk_ref; "retain": retain_*; "kl": retain_kl)
    forget_logp: Tensor | None = None           # sum of log pi_theta over forget answer tokens
    forget_tokens: Tensor | None = None         # number of those tokens
    forget_ref: Tensor | None = None            # same sum under the reference (cached or live)
    retain_logp: Tensor | None = None
    retain_tokens: Tensor | None = None
    idk_logp: Tensor | None = None              # same question, an "I don't know" answer
    idk_tokens: Tensor | None = None
    idk_ref: Tensor | None = None
    retain_kl: Tensor | None = None             # [N] per retain token KL(ref || theta)
    # per token
    forget_token_logp: Tensor | None = None     # [B, T] log pi_theta of the next answer token, 0 elsewhere ("token")
    forget_mask: Tensor | None = None           # [B, T] bool, positions predicting an answer token ("token")
    forget_ref_token_logp: Tensor | None = None  # [B, T] same under the reference, cacheable ("ref_token")
    forget_logits: Tensor | None = None         # [N, V] model's logits at the forget_mask positions ("logits")
    forget_labels: Tensor | None = None         # [N] the answer tokens they predict ("logits")
    forget_ref_logits: Tensor | None = None     # [N, V] the live reference's at the same positions ("ref_logits")
    forget_hidden: Tensor | None = None         # [B, T, H] after decoder layer `layer`, forget rows ("hidden")
    retain_hidden: Tensor | None = None         # [B, T, H] same on retain rows ("hidden")
    retain_ref_hidden: Tensor | None = None     # [B, T, H] the live reference's on retain rows ("hidden")
    # [B, T] answer-token masks (labels != -100) of the hidden-state rows: RMU averages over the
    # answer tokens, as open-unlearning does ("hidden")
    forget_attn: Tensor | None = None
    retain_attn: Tensor | None = None


#: What a method may ask for (``Method.needs``).
NEEDS = frozenset({"ref", "idk", "retain", "kl", "token", "ref_token", "logits", "ref_logits", "hidden"})


@dataclass(frozen=True)
class Method:
    name: str                 # the --method name, e.g. "npo_rt"
    label: str                # the pipeline / figure label, e.g. "NPO+RT"
    forget: str               # the forget term's name, e.g. "npo"
    regulariser: str          # "none" | "rt" | "kl"
    hparams: dict             # defaults, e.g. {"beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0}
    needs: frozenset          # subset of NEEDS
    loss: Callable            # loss(x: Inputs, **hparams) -> {"loss", "forget_loss", "retain_loss"}
    colour: str               # matplotlib colour for figures
    linestyle: str = "-"
    trainable: Callable | None = None   # model -> parameters to train (RMU); None: all
    doc: str = ""             # one line for --help


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; a second method with the same name or label, or an unknown need, is a bug."""
    if method.name in REGISTRY or any(m.label == method.label for m in REGISTRY.values()):
        raise ValueError(f"method {method.name!r} / label {method.label!r} is registered twice")
    if not method.needs <= NEEDS or method.regulariser not in REGULARISERS:
        raise ValueError(f"method {method.name!r}: unknown need or regulariser")
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def by_label(label: str) -> Method:
    """The method whose pipeline / figure label is ``label`` (e.g. "NPO+RT")."""
    for m in REGISTRY.values():
        if m.label == label:
            return m
    raise ValueError(f"unknown method {label!r}; use any of {' '.join(m.label for m in REGISTRY.values())}")


# ---- hyper-parameters -----------------------------------------------------------------------------

def _positive_beta(method: Method, hp: dict) -> str | None:
    if not hp["beta"] > 0:
        return (f"beta must be > 0 for {method.name} (got {hp['beta']}); use --method ga for the "
                f"beta -> 0 limit of NPO")
    return None


#: forget term -> check(method, hparams) -> the error's text, or None. A method module adds its own.
HPARAM_CHECKS: dict[str, Callable] = {"npo": _positive_beta, "dpo": _positive_beta,
                                      "kto": _positive_beta, "simnpo": _positive_beta}


def _coerce(name: str, value, default):
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            return float(value)
    except ValueError:
        raise ValueError(f"--hp {name}={value}: expected a {type(default).__name__}") from None
    return value


def resolve_hparams(method: Method, given: dict) -> dict:
    """The method's defaults updated with ``given`` (strings are parsed as the default's type);
    ValueError naming the fix for an unknown name, a non-finite number or a value its check refuses."""
    unknown = sorted(set(given) - set(method.hparams))
    if unknown:
        raise ValueError(f"{method.name} has no hyper-parameter {unknown[0]!r}; its --hp names are "
                         f"{', '.join(method.hparams) or '(none)'}")
    hp = {**method.hparams, **{k: _coerce(k, v, method.hparams[k]) for k, v in given.items()}}
    for k, v in hp.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"--hp {k} must be finite (got {v})")
    check = HPARAM_CHECKS.get(method.forget)
    error = check(method, hp) if check is not None else None
    if error:
        raise ValueError(error)
    return hp


# ---- composing a forget term with a regulariser -----------------------------------------------------

def retain_nll(x: Inputs) -> Tensor:
    """RT: the HF-style token-mean NLL of the retain answers over the micro-batch."""
    from llm.models import token_mean_logp  # here: importing the registry needs no torch (figures read it)
    return nll_loss(token_mean_logp(x.retain_logp, x.retain_tokens))


def retain_kl(x: Inputs) -> Tensor:
    """KL: the token-averaged KL(ref || theta) on the retain inputs' real tokens."""
    return x.retain_kl.mean()


#: regulariser -> (its term, or None for "none"; the inputs it needs)
REGULARISERS = {"none": (None, frozenset()), "rt": (retain_nll, frozenset({"retain"})),
                "kl": (retain_kl, frozenset({"kl"}))}


def combine(forget: Tensor, retain: Tensor | None, forget_weight, retain_weight) -> dict:
    """forget_weight * forget + retain_weight * retain (0 when there is none), with the parts detached."""
    retain = forget.new_zeros(()) if retain is None else retain
    return {"loss": forget_weight * forget + retain_weight * retain,
            "forget_loss": forget.detach(), "retain_loss": retain.detach()}


def compose(name: str, label: str, forget: str, term: Callable, regulariser: str, hparams: dict,
            needs, colour: str, linestyle: str = "-", doc: str = "", **extra) -> Method:
    """A Method whose loss is ``forget_weight * term(x, **its hparams) + retain_weight * regulariser(x)``.

    ``hparams`` are the term's own (e.g. beta); forget_weight (default 1, or as given) and, with a
    regulariser, retain_weight (default 1) are added. ``needs``: the term's; the regulariser's are added."""
    reg, reg_needs = REGULARISERS[regulariser]
    hp = {**hparams, "forget_weight": hparams.get("forget_weight", 1.0)}
    if reg is not None:
        hp["retain_weight"] = hparams.get("retain_weight", 1.0)

    def loss(x: Inputs, forget_weight, retain_weight=1.0, **term_hp):
        return combine(term(x, **term_hp), reg(x) if reg is not None else None, forget_weight, retain_weight)

    loss.__name__ = loss.__qualname__ = name
    return Method(name=name, label=label, forget=forget, regulariser=regulariser, hparams=hp,
                  needs=frozenset(needs) | reg_needs, loss=loss, colour=colour, linestyle=linestyle,
                  doc=doc, **extra)
