"""Unlearning methods: one module per forget term, each registering its variants (llm/methods/base.py
defines the API). The import list below is the registration: its order is the order of --method's
choices, of the pipeline's method list and of figure legends after the paper's grid
(llm/pipeline_plan.py PAPER_GRID).

    from llm.methods import get
    m = get("npo_rt")
    parts = m.loss(Inputs(forget_logp=..., forget_tokens=..., forget_ref=..., retain_logp=...,
                          retain_tokens=...), **m.hparams)
"""
from llm.methods.base import (REGISTRY, Inputs, Method, by_label, get, register,  # noqa: F401
                              resolve_hparams)
from llm.methods import ga, npo, dpo, kto, simnpo  # noqa: F401,E402  (registration, in this order)
from llm.methods import wga, satimp, ceu, undial, rmu  # noqa: F401,E402  (open-unlearning's newer objectives)

__all__ = ["REGISTRY", "Inputs", "Method", "by_label", "get", "register", "resolve_hparams"]
