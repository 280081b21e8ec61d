"""RMU, representation misdirection for unlearning (Li et al. 2024, the WMDP paper), as
open-unlearning runs it on TOFU (src/trainer/unlearn/rmu.py, configs/trainer/RMU.yaml):
theory.objectives.rmu_forget_loss pushes the hidden state after decoder layer ``layer`` on the
forget answers towards c * u, rmu_retain_loss keeps it at the reference's on the retain answers
(retain_loss_type EMBED_DIFF), both averaged over answer tokens (open-unlearning's mask is
``labels != -100``).

Defaults from the yaml: steering_coeff c = 2 (the class default is 20), layer 7
(``model.layers.7``), gamma = forget_weight 1, alpha = retain_weight 1, and every parameter
trainable (``.*``; the class default, the WMDP paper's choice, is layers 5-7's mlp.down_proj only).
Of "every parameter" only the input embeddings and decoder layers 0..layer can receive a gradient
(the loss stops at the layer), so ``trainable`` names exactly those: the same update, and DDP sees
no unused parameter. u is uniform on [0, 1)^H normalised to |u| = 1 (open-unlearning's
``torch.rand``, drawn once from the global generator); here it is drawn from its own generator
seeded by ``control_seed``, so a run's u does not depend on what ran before it."""
from __future__ import annotations

from llm.train.methods.base import HPARAM_CHECKS, REGULARISERS, Inputs, compose, register
from theory.objectives import rmu_forget_loss, rmu_retain_loss


def control_vector(hidden_size: int, steering_coeff: float, seed: int):
    """c * u, u = rand(H) / |rand(H)| from a generator seeded with ``seed``. [H] float32"""
    import torch  # here: importing the registry imports no torch (llm/train/methods/base.py)
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return steering_coeff * u / u.norm()


def rmu_term(x: Inputs, steering_coeff, layer, control_seed):
    control = control_vector(x.forget_hidden.shape[-1], steering_coeff, control_seed)
    return rmu_forget_loss(x.forget_hidden, x.forget_attn, control)


def embed_diff(x: Inputs):
    """open-unlearning's EMBED_DIFF retain term."""
    return rmu_retain_loss(x.retain_hidden, x.retain_ref_hidden, x.retain_attn)


def up_to_layer(model, layer=7, **_):
    """The parameters RMU's loss reaches: the input embeddings and decoder layers 0..layer."""
    from llm.train.distributed import decoder_layers
    from llm.train.methods.inputs import decoder_layer
    decoder_layer(model, layer)  # the range check, naming the fix
    inner = getattr(model, "module", model)
    params = list(inner.get_input_embeddings().parameters())
    for block in decoder_layers(inner)[:layer + 1]:
        params += list(block.parameters())
    return params


def _check(method, hp):
    if not (isinstance(hp["layer"], int) and hp["layer"] >= 0):
        return f"layer must be an integer >= 0 for {method.name} (got {hp['layer']})"
    return None


REGULARISERS["embed"] = (embed_diff, frozenset({"retain", "hidden"}))
HPARAM_CHECKS["rmu"] = _check
register(compose("rmu", "RMU", "rmu", rmu_term, "embed",
                 {"steering_coeff": 2.0, "layer": 7, "control_seed": 0}, {"hidden"}, "#BCBD22", "-",
                 doc="hidden state after a layer pushed to a random direction on forget, kept on retain "
                     "(open-unlearning's RMU)", trainable=up_to_layer))
