"""WGA, weighted gradient ascent (Wang et al. 2025), as open-unlearning runs it
(src/trainer/unlearn/wga.py, configs/trainer/WGA.yaml): theory.objectives.wga_loss on the forget
answers' per-token log-probs + the retain NLL (a GradDiff subclass, retain_loss_type NLL), with
its config's beta 1, gamma = forget_weight 1, alpha = retain_weight 1."""
from __future__ import annotations

from llm.train.methods.base import HPARAM_CHECKS, Inputs, compose, register
from theory.objectives import wga_loss


def wga_term(x: Inputs, beta):
    return wga_loss(x.forget_token_logp, x.forget_mask, beta)


def _check(method, hp):
    if not hp["beta"] >= 0:
        return f"beta must be >= 0 for {method.name} (got {hp['beta']}); beta 0 is GA's token mean"
    return None


HPARAM_CHECKS["wga"] = _check
register(compose("wga", "WGA", "wga", wga_term, "rt", {"beta": 1.0}, {"token"}, "#E73F74", "-",
                 doc="weighted GA: per-token NLL weighted by sg(p)^beta + retain NLL (open-unlearning's WGA)"))
