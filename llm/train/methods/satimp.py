"""SatImp (Yang et al. 2025), as open-unlearning runs it (src/trainer/unlearn/satimp.py,
configs/trainer/SatImp.yaml): theory.objectives.satimp_loss on the forget answers' per-token
log-probs + the retain NLL (GradDiff, retain_loss_type NLL).

Defaults from the yaml, which is what open-unlearning runs: beta1 5, beta2 1, gamma =
forget_weight 0.1, alpha = retain_weight 1. The class's own defaults are the other way round
(gamma 1.0, alpha 0.1); the yaml's method_args override them."""
from __future__ import annotations

from llm.train.methods.base import HPARAM_CHECKS, Inputs, compose, register
from theory.objectives import satimp_loss


def satimp_term(x: Inputs, beta1, beta2):
    return satimp_loss(x.forget_token_logp, x.forget_mask, beta1, beta2)


def _check(method, hp):
    bad = [k for k in ("beta1", "beta2") if not hp[k] >= 0]
    return f"{bad[0]} must be >= 0 for {method.name} (got {hp[bad[0]]})" if bad else None


HPARAM_CHECKS["satimp"] = _check
register(compose("satimp", "SatImp", "satimp", satimp_term, "rt",
                 {"beta1": 5.0, "beta2": 1.0, "forget_weight": 0.1}, {"token"}, "#008695", "--",
                 doc="per-token NLL weighted by sg(p)^beta1 sg(1-p)^beta2 + retain NLL (open-unlearning's SatImp)"))
