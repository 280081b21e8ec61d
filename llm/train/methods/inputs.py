"""The inputs only some methods ask for (llm.train.methods.base.Inputs), computed only when asked:

* "logits":     the current model's logits at the forget answer positions and the tokens they
                predict: the rows of the micro-batch's one forward that belong to forget rows
                (that forward already projects onto the vocabulary at every answer position,
                llm.models.logits_at), so no extra pass;
* "ref_logits": the live reference's logits at the same positions (one no-grad reference pass on
                the forget rows, as the KL term's pass on the retain rows);
* "hidden":     the output of decoder layer ``layer`` (hyper-parameter) of the current model on
                forget and retain rows, and of the live reference on retain rows, each taken by a
                forward hook on that layer during a full forward (``hidden_after``);
* a method's own trainable parameters (``Method.trainable``): every other parameter is frozen
                before the optimizer is built (``restrict_trainable``).

Why a hook and not ``output_hidden_states``: the hook reads the same module open-unlearning's RMU
hooks (``model.layers.<l>``), needs no change to the trainer's one forward (so DDP, PEFT, autocast
and activation checkpointing apply as usual) and keeps no other layer's output. The forward is not
stopped at the layer: stopping it by an exception would leave DDP's reducer and FSDP2's
unshard/reshard hooks half-run. The layers above cost a forward for nothing, as in open-unlearning.
"""
from __future__ import annotations

import contextlib

import torch

from llm.train.checkpoints import unwrap
from llm.train.distributed import decoder_layers

__all__ = ["LIVE_NEEDS", "decoder_layer", "hidden_after", "capture", "reference_pass", "prepare",
           "restrict_trainable", "BUILDERS"]

#: needs only a live reference serves: per-position logits and hidden states are not cached
LIVE_NEEDS = frozenset({"kl", "ref_logits", "hidden"})


def decoder_layer(model, layer: int) -> torch.nn.Module:
    """Decoder layer ``layer`` (0-based, as open-unlearning's ``model.layers.<l>``); ValueError
    naming the valid range when the model has fewer layers."""
    layers = decoder_layers(unwrap(model))
    if not (isinstance(layer, int) and 0 <= layer < len(layers)):
        raise ValueError(f"layer {layer} does not exist: the model has {len(layers)} decoder layers; "
                         f"pass --hp layer=N with 0 <= N < {len(layers)}")
    return layers[layer]


@contextlib.contextmanager
def hidden_after(model, layer: int):
    """Yields a dict that receives ``"hidden"``: [B, T, H], the output of decoder layer ``layer`` in
    the first forward run inside the block (with activation checkpointing, the recomputation during
    backward runs after the block and is not recorded)."""
    out = {}

    def hook(module, args, output):
        out.setdefault("hidden", output[0] if isinstance(output, tuple) else output)

    handle = decoder_layer(model, layer).register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


def reference_pass(ref_model, input_ids, attention_mask, keep=None, layer: int | None = None,
                   autocast=contextlib.nullcontext):
    """One no-grad forward of the reference: (its logits at ``keep`` [B, T] (row-major) or None,
    its output of decoder layer ``layer`` or None). ``ref_model`` is already in reference mode
    (llm.train.refcache.reference_mode: eval, no grad, LoRA adapter off)."""
    from llm.models import logits_at
    want = keep if keep is not None else torch.zeros_like(attention_mask, dtype=torch.bool)
    hooked = hidden_after(ref_model, layer) if layer is not None else contextlib.nullcontext({})
    with torch.no_grad(), hooked as captured, autocast():
        logits = logits_at(ref_model, input_ids, attention_mask, want)
    return (logits if keep is not None else None), captured.get("hidden")


def capture(run, model):
    """Around the micro-batch's forward: ``hidden_after`` the method's layer when it needs
    "hidden", else a context that captures nothing."""
    if "hidden" not in run.need:
        return contextlib.nullcontext({})
    return hidden_after(model, run.cfg.hparams["layer"])


def prepare(run, method) -> None:
    """Before sharding and the reference: check the layer a "hidden" method names, and freeze what
    a method with its own trainable set does not train. ValueError naming the fix for what is not
    supported: such a method with --lora (it chooses the parameters, LoRA would too) or with
    --strategy fsdp (FSDP2 with frozen parameters inside a sharded group is not tested here)."""
    cfg = run.cfg
    if "hidden" in run.need:
        decoder_layer(run.model, cfg.hparams["layer"])
    if method.trainable is None:
        return
    if cfg.lora:
        raise ValueError(f"{method.name} chooses its own trainable parameters; drop --lora")
    if run.sharded:
        raise ValueError(f"{method.name} trains a subset of the parameters, which --strategy fsdp does "
                         f"not support here; use --strategy ddp (or one process)")
    restrict_trainable(run.model, method, cfg.hparams)


def restrict_trainable(model, method, hparams: dict) -> int:
    """Freeze every parameter of ``model`` that ``method.trainable(model, **hparams)`` does not
    list (the optimizer and the checkpoints then see only those: llm.train.checkpoints.trainable);
    returns the number of parameters left trainable. No-op for a method without ``trainable``."""
    if method.trainable is None:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    chosen = {id(p) for p in method.trainable(model, **hparams)}
    if not chosen:
        raise ValueError(f"{method.name} chose no parameter to train; check its hyper-parameters")
    for p in model.parameters():
        if id(p) not in chosen:
            p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- the builders (llm/train/unlearning.py INPUT_BUILDERS: need -> builder(micro, inputs)) ---------------

def _reference(run):
    from llm.train.unlearning import _reference as live  # the one definition of the live reference
    return live(run)


def _forget_answer(m) -> torch.Tensor:
    """[B, T] the forget rows' answer positions within the whole micro-batch."""
    mask = torch.zeros_like(m.answer)
    mask[m.rows["forget"]] = m.answer[m.rows["forget"]]
    return mask


def build_logits(m, x) -> None:
    """"logits": the forward's logits at the forget rows' answer positions (row-major, as
    forget_mask orders them) and the answer tokens they predict. No extra pass."""
    mask = _forget_answer(m)
    x.forget_logits = m.logits[mask[m.keep]]
    x.forget_labels = m.batch["labels"][:, 1:][mask[:, :-1]]


def build_ref_logits(m, x) -> None:
    """"ref_logits": the live reference's logits at the same positions (one no-grad pass on the
    forget rows)."""
    run, f = m.run, m.rows["forget"]
    with _reference(run) as ref_model:
        x.forget_ref_logits, _ = reference_pass(ref_model, m.batch["input_ids"][f], m.batch["attention_mask"][f],
                                                keep=m.answer[f], autocast=run.autocast)


def build_hidden(m, x) -> None:
    """"hidden": the output of decoder layer ``layer`` on the forget and retain rows (captured in
    the forward, ``m.hidden``), the live reference's on the retain rows, and as ``*_attn`` the
    positions RMU averages over: open-unlearning's ``labels != -100``, i.e. the answer tokens
    themselves (not the positions predicting them, and not the prompt)."""
    run, f, r = m.run, m.rows["forget"], m.rows["retain"]
    x.forget_hidden, x.retain_hidden = m.hidden[f], m.hidden[r]
    labelled = m.batch["labels"] != -100
    x.forget_attn, x.retain_attn = labelled[f], labelled[r]
    with _reference(run) as ref_model:
        _, x.retain_ref_hidden = reference_pass(ref_model, m.batch["input_ids"][r], m.batch["attention_mask"][r],
                                                layer=run.cfg.hparams["layer"], autocast=run.autocast)


BUILDERS = {"logits": build_logits, "ref_logits": build_ref_logits, "hidden": build_hidden}
