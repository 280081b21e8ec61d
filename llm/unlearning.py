"""What unlearning adds to the training loop of llm/train.py: the method's defaults and checks,
its loss on one micro-batch (llm/losses.py, built only from theory/objectives.py) and the live
reference passes. llm/train.py takes these as an ``Objective`` instead of importing them, so that
fine-tuning's code hash (the pipeline's target and retain stages) does not include the losses.

    from llm.unlearning import unlearn
    unlearn(TrainConfig(model="runs/target", forget="forget01", method="npo_rt", out="runs/npo_rt"))
"""
from __future__ import annotations

from pathlib import Path

import torch

from llm import train
from llm.checkpoints import unwrap
from llm.config import ConfigError, TrainConfig
from llm.formatting import collate
from llm.losses import METHODS, LossInputs, check_hparams, method_defaults, needs
from llm.models import sequence_logprob

__all__ = ["OBJECTIVE", "unlearn", "prepare_run"]


def unlearn(config: TrainConfig, eval_fn: train.EvalFn | None = None) -> Path:
    """Unlearn ``config.forget`` from ``config.model`` with ``config.method``; returns the output folder."""
    return train._train(config, "unlearn", eval_fn, OBJECTIVE)


def prepare_run(cfg: TrainConfig, mode: str = "unlearn", dist=None) -> train.Run:
    """llm.train.prepare_run for unlearning (the same signature, so tests and benchmarks can swap it in)."""
    if mode != "unlearn":
        raise ValueError(f"llm.unlearning prepares unlearning runs, not {mode!r}; use llm.train.prepare_run")
    return train.prepare_run(cfg, mode, dist, OBJECTIVE)


def _resolve(cfg: TrainConfig) -> TrainConfig:
    """The method's defaults (beta, weights) where not given; ConfigError for an unknown method or
    a beta it cannot use."""
    try:
        defaults = method_defaults(cfg.method) if cfg.method in METHODS else {}
        for k in ("beta", "forget_weight", "retain_weight"):
            if getattr(cfg, k) is None:
                setattr(cfg, k, defaults.get(k))
        check_hparams(cfg.method, cfg.beta)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def _loss(run: train.Run, groups, logits, logp, tokens, batch, items) -> dict[str, torch.Tensor]:
    """The method's loss parts from one forward pass over ``groups`` (forget, retain, idk rows, in
    that order, as llm.train.micro_losses batched them)."""
    cfg = run.cfg
    sl, start = {}, 0
    for name, g in groups.items():
        sl[name] = slice(start, start + len(g))
        start += len(g)
    x = LossInputs(forget_logp=logp[sl["forget"]], forget_tokens=tokens[sl["forget"]])
    if "retain" in groups:
        x.retain_logp, x.retain_tokens = logp[sl["retain"]], tokens[sl["retain"]]
    if "idk" in groups:
        x.idk_logp, x.idk_tokens = logp[sl["idk"]], tokens[sl["idk"]]
    need = run.need
    if "ref" in need:
        x.forget_ref, x.idk_ref = _reference_logps(run, items, groups)
    if "kl" in need:
        x.retain_kl = _retain_kl(run, logits[sl["retain"]], batch["input_ids"][sl["retain"]],
                                 batch["attention_mask"][sl["retain"]])
    return METHODS[cfg.method](x, beta=cfg.beta, forget_weight=cfg.forget_weight,
                               retain_weight=cfg.retain_weight, delta=cfg.delta)


# ---- the reference (moved whole from llm/train.py) ----------------------------------------------

def _reference(run: train.Run):
    """The live reference: a frozen copy, or the same model with its LoRA adapter disabled."""
    from llm.refcache import reference_mode
    return reference_mode(run.ref_model if run.ref_model is not None else unwrap(run.model))


def _reference_logps(run: train.Run, items, groups):
    device = run.dist.device
    if not run.live_reference:
        forget_ref = run.ref["forget"][[i for i, _, _, _ in items]].to(device, torch.float32)
        idk_ref = None
        if "idk" in groups:
            idk_ref = torch.tensor([run.ref["idk"][(i, k)] for i, _, k, _ in items],
                                   dtype=torch.float32, device=device)
        return forget_ref, idk_ref
    refs = []
    with _reference(run) as ref_model:
        for name in ("forget", "idk"):
            if name not in groups:
                refs.append(None)
                continue
            b = {k: v.to(device) for k, v in collate(groups[name], run.tokenizer.pad_token_id).items()}
            with run.autocast():
                logits = ref_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            refs.append(sequence_logprob(logits, b["labels"]))
    return refs[0], refs[1]


def _retain_kl(run: train.Run, logits, input_ids, mask):
    """Per-token KL(ref || theta) on the retain inputs' real (unpadded) positions."""
    from theory.objectives import kl_categorical
    with _reference(run) as ref_model:
        with run.autocast():
            ref_logits = ref_model(input_ids=input_ids, attention_mask=mask).logits
    keep = mask.bool()
    cur = torch.log_softmax(logits.float()[keep], -1)
    ref = torch.log_softmax(ref_logits.float()[keep], -1)
    return kl_categorical(ref, cur)


OBJECTIVE = train.Objective(methods=tuple(METHODS), resolve=_resolve, needs=needs, loss=_loss)
