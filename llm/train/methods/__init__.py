"""Unlearning methods: one module per forget term, each registering its variants (llm/train/methods/base.py
defines the API). The import list below is the registration: its order is the order of --method's
choices, of the pipeline's method list and of figure legends after the paper's grid
(llm/pipeline/plan.py PAPER_GRID).

    from llm.train.methods import get
    m = get("npo_rt")
    parts = m.loss(Inputs(forget_logp=..., forget_tokens=..., forget_ref=..., retain_logp=...,
                          retain_tokens=...), **m.hparams)
"""
from llm.train.methods.base import (REGISTRY, Inputs, Method, by_label, get, register,  # noqa: F401
                              resolve_hparams)
from llm.train.methods import ga, npo, dpo, kto, simnpo  # noqa: F401,E402  (registration, in this order)
from llm.train.methods import wga, satimp, ceu, undial, rmu  # noqa: F401,E402  (open-unlearning's newer objectives)

__all__ = ["REGISTRY", "Inputs", "Method", "by_label", "get", "register", "resolve_hparams"]
