"""KTO on the forget answers (paper App. E.1.3), its reference point estimated on IDK pairs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from llm.train.methods.base import Inputs, compose, register
from theory.objectives import kto_loss

if TYPE_CHECKING:
    import torch


def kto_z_ref(x: Inputs, beta) -> torch.Tensor:
    """KTO's z_ref = beta * KL(pi || pi_ref), estimated (paper App. E.1.3) as the mean log-ratio on
    (forget question, IDK answer) pairs, clamped at 0 and detached, as in KTO/TRL."""
    return (beta * (x.idk_logp - x.idk_ref).mean()).clamp(min=0).detach()


def kto_term(x: Inputs, beta):
    return kto_loss(x.forget_logp, x.forget_ref, beta, kto_z_ref(x, beta))


for _name, _label, _reg, _colour, _line in [("kto", "KTO", "none", "#A5AA99", "-"),
                                            ("kto_rt", "KTO+RT", "rt", "#80BA5A", "--")]:
    register(compose(_name, _label, "kto", kto_term, _reg, {"beta": 0.1}, {"ref", "idk"}, _colour, _line,
                     doc="KTO on the forget answers" + (" + retain NLL" if _reg == "rt" else "")))
