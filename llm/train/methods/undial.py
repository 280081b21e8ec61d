"""UNDIAL, self-distillation with adjusted logits (Dong et al. 2024), as open-unlearning runs it
(src/trainer/unlearn/undial.py, configs/trainer/UNDIAL.yaml): theory.objectives.undial_loss on the
current model's and the live reference's logits at the forget answer positions.

Defaults from the yaml (the class's are beta 1 and GradDiff's alpha 1): beta 10, gamma =
forget_weight 1, and alpha 0 on its GradDiff retain NLL, so the retain term is zero there and is
not computed here (regulariser "none"). Unlike
open-unlearning, only answer positions enter the mean (it averages over every position, prompt and
padding included, and scatters their -100 labels into vocabulary entry V-100)."""
from __future__ import annotations

from llm.train.methods.base import Inputs, compose, register
from theory.objectives import undial_loss


def undial_term(x: Inputs, beta):
    return undial_loss(x.forget_logits, x.forget_ref_logits, x.forget_labels, beta)


register(compose("undial", "UNDIAL", "undial", undial_term, "none", {"beta": 10.0},
                 {"logits", "ref_logits"}, "#8C564B", ":",
                 doc="distil from the reference with the true token's logit lowered by beta (open-unlearning's UNDIAL)"))
