"""IdkDPO: DPO with the "I don't know" answer as the winner and the true forget answer as the loser."""
from __future__ import annotations

from llm.train.methods.base import Inputs, compose, register
from theory.objectives import dpo_loss


def dpo_term(x: Inputs, beta):
    return dpo_loss(x.idk_logp, x.forget_logp, x.idk_ref, x.forget_ref, beta)


for _name, _label, _reg, _colour, _line in [("dpo", "DPO", "none", "#7F3C8D", "-"),
                                            ("dpo_rt", "DPO+RT", "rt", "#000000", "--"),
                                            ("dpo_kl", "DPO+KL", "kl", "#3969AC", ":")]:
    register(compose(_name, _label, "dpo", dpo_term, _reg, {"beta": 0.1}, {"ref", "idk"}, _colour, _line,
                     doc="DPO preferring an 'I don't know' answer" + {"none": "", "rt": " + retain NLL",
                                                                      "kl": " + KL on retain"}[_reg]))
