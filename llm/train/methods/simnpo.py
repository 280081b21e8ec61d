"""SimNPO: reference-free NPO on length-normalised log-probs with margin delta (open-unlearning's
defaults: beta 4.5, gamma = forget_weight 0.125); simnpo_rt is open-unlearning's SimNPO (a
GradDiff subclass: the SimNPO term + retain NLL)."""
from __future__ import annotations

from llm.train.methods.base import Inputs, compose, register
from theory.objectives import simnpo_loss


def simnpo_term(x: Inputs, beta, delta):
    return simnpo_loss(x.forget_logp, x.forget_tokens.to(x.forget_logp.dtype), beta, delta)


_HP = {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125}
# SimNPO+RT's colour is the one figures/style.py derived for it before the registry (not in its table).
for _name, _label, _reg, _colour, _line in [("simnpo", "SimNPO", "none", "#F0E442", "-."),
                                            ("simnpo_rt", "SimNPO+RT", "rt", "#CC79A7", "-")]:
    register(compose(_name, _label, "simnpo", simnpo_term, _reg, _HP, (), _colour, _line,
                     doc="SimNPO (reference-free)" + (" + retain NLL" if _reg == "rt" else "")))
