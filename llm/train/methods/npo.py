"""NPO (paper Eq. 3) on per-sequence log-probs summed over answer tokens, alone or with RT / KL."""
from __future__ import annotations

from llm.train.methods.base import Inputs, compose, register
from theory.objectives import npo_loss


def npo_term(x: Inputs, beta):
    return npo_loss(x.forget_logp, x.forget_ref, beta)


for _name, _label, _reg, _colour, _line in [("npo", "NPO", "none", "#0072B2", "-"),
                                            ("npo_rt", "NPO+RT", "rt", "#009E73", "--"),
                                            ("npo_kl", "NPO+KL", "kl", "#56B4E9", ":")]:
    register(compose(_name, _label, "npo", npo_term, _reg, {"beta": 0.1}, {"ref"}, _colour, _line,
                     doc="negative preference optimisation" + {"none": "", "rt": " + retain NLL",
                                                                "kl": " + KL on retain"}[_reg]))
