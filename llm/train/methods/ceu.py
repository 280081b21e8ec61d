"""CE-U, cross-entropy unlearning (Yang et al. 2025, arXiv:2503.01224), as open-unlearning runs it
(src/trainer/unlearn/ceu.py, configs/trainer/CEU.yaml): theory.objectives.ceu_loss on the current
model's logits at the forget answer positions, no retain term (an UnlearnTrainer, not GradDiff).

Each answer's first ``ignore_first_n_answer_tokens`` tokens (config: 1) are left out, the trick of
the paper's footnote that open-unlearning implements by relabelling them -100."""
from __future__ import annotations

from llm.train.methods.base import HPARAM_CHECKS, Inputs, compose, register
from theory.objectives import ceu_loss


def ceu_term(x: Inputs, ignore_first_n_answer_tokens):
    # forget_logits' rows are forget_mask's True positions in row-major order: keep those past the
    # first n answer positions of their row
    mask = x.forget_mask
    keep = (mask.cumsum(-1) > ignore_first_n_answer_tokens)[mask]
    return ceu_loss(x.forget_logits[keep], x.forget_labels[keep])


def _check(method, hp):
    n = hp["ignore_first_n_answer_tokens"]
    return None if n >= 0 else f"ignore_first_n_answer_tokens must be >= 0 for {method.name} (got {n})"


HPARAM_CHECKS["ceu"] = _check
register(compose("ceu", "CE-U", "ceu", ceu_term, "none", {"ignore_first_n_answer_tokens": 1},
                 {"logits", "token"}, "#4B4B8F", "-.",
                 doc="cross-entropy to the model's own distribution without the true token (open-unlearning's CE-U)"))
