"""Reference log-probs computed once and cached on disk: NPO/DPO/KTO without a second model.

NPO's reference enters only through one number per forget sequence, log pi_ref(y|x) (tofu-notes
5.1), and the reference is the model *before* unlearning. So before the first step the trainer
runs the model itself (no_grad, eval mode, LoRA adapter disabled) over the forget sequences (and
the IDK pairs DPO/KTO use), stores the sums, and keeps no reference copy in memory.

The cache file is ``<cache_dir>/refcache-<hash>.npz`` (+ JSON sidecar, written atomically by
``infra/cache.py``); the hash covers a fingerprint of the weights, the model identity, the encoded
token ids (hence data, template and tokenizer), dtype/precision, and the code that computes the
values (``reference_logps`` and the project modules it uses: infra/codehash.py). A resumed run reloads the initial
model first, so it finds the same entry (or recomputes it from the same weights).
"""
from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np
import torch

from infra.cache import cached
from llm.data.formatting import collate
from llm.models import answer_logprob, answer_token_logprobs

__all__ = ["model_fingerprint", "encoded_fingerprint", "reference_logps", "cached_reference_logps",
           "reference_token_logps", "cached_reference_token_logps", "reference_mode"]


def model_fingerprint(model, identity: str = "") -> str:
    """sha256 over every parameter's name, shape, dtype and its first/last 256 values, plus
    ``identity`` (e.g. the checkpoint path): cheap even for 7B models, and changes with any
    realistic change of weights (fine-tuning moves every tensor)."""
    h = hashlib.sha256(identity.encode())
    for name, p in sorted(_base_state(model).items()):
        flat = p.detach().reshape(-1)
        sample = torch.cat([flat[:256], flat[-256:]]).to("cpu", torch.float32).numpy()
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|{p.sum(dtype=torch.float64).item():.17g}".encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


def _base_state(model) -> dict:
    # With LoRA, the reference is the base model: skip the adapter weights (they start at B=0).
    return {k: v for k, v in model.state_dict().items() if "lora_" not in k}


def encoded_fingerprint(encoded: list[dict]) -> str:
    blob = json.dumps([[e["input_ids"], e["labels"]] for e in encoded], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def reference_mode(model):
    """The model as its own reference: eval mode, no grad, LoRA adapter disabled if present."""
    was_training = model.training
    model.eval()
    adapter = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with torch.no_grad(), adapter:
            yield model
    finally:
        model.train(was_training)


def reference_logps(model, encoded: list[dict], pad_id: int, batch_size: int = 16,
                    autocast=contextlib.nullcontext) -> np.ndarray:
    """Summed answer log-probs of every encoded sequence under ``model`` as reference ([N] float64)."""
    device = next(model.parameters()).device
    out = []
    with reference_mode(model):
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start:start + batch_size], pad_id)
            with autocast():
                logp = answer_logprob(model, batch["input_ids"].to(device),
                                      batch["attention_mask"].to(device), batch["labels"].to(device))
            out.append(logp.double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def cached_reference_logps(model, encoded: dict[str, list[dict]], pad_id: int, cache_dir,
                           identity: str = "", precision: str = "", batch_size: int = 16,
                           autocast=contextlib.nullcontext, force: bool = False,
                           fingerprint: str | None = None) -> dict[str, np.ndarray]:
    """{name: [N] reference log-probs} for each named list of encoded sequences, cached on disk.

    ``fingerprint``: ``model_fingerprint(model, identity)`` taken earlier (a sharded model's
    parameters are DTensors, whose fingerprint would need every rank)."""
    config = {"kind": "reference_logps", "model": fingerprint or model_fingerprint(model, identity),
              "precision": precision,
              "data": {name: encoded_fingerprint(seqs) for name, seqs in sorted(encoded.items())}}

    def compute():
        return {name: reference_logps(model, seqs, pad_id, batch_size, autocast)
                for name, seqs in encoded.items()}

    return cached("refcache", config, compute, root=cache_dir, force=force)


def reference_token_logps(model, encoded: list[dict], pad_id: int, batch_size: int = 16,
                          autocast=contextlib.nullcontext) -> dict[str, np.ndarray]:
    """Per-token answer log-probs under ``model`` as reference (methods that need "ref_token"):
    {"values": every sequence's, concatenated in order (float64), "lengths": tokens per sequence}."""
    device = next(model.parameters()).device
    values, lengths = [], []
    with reference_mode(model):
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start:start + batch_size], pad_id)
            with autocast():
                logp, keep = answer_token_logprobs(model, batch["input_ids"].to(device),
                                                   batch["attention_mask"].to(device),
                                                   batch["labels"].to(device))
            values.append(logp.double().cpu())
            lengths.append(keep.sum(-1).cpu())
    if not values:
        return {"values": np.zeros(0), "lengths": np.zeros(0, dtype=np.int64)}
    return {"values": torch.cat(values).numpy(), "lengths": torch.cat(lengths).numpy()}


def cached_reference_token_logps(model, encoded: list[dict], pad_id: int, cache_dir, precision: str = "",
                                 batch_size: int = 16, autocast=contextlib.nullcontext, force: bool = False,
                                 fingerprint: str = "") -> list[torch.Tensor]:
    """Each sequence's [n_answer_tokens] reference log-probs (``reference_token_logps``), cached
    on disk under the same kind of key as ``cached_reference_logps`` (``fingerprint``: the weights')."""
    config = {"kind": "reference_token_logps", "model": fingerprint, "precision": precision,
              "data": encoded_fingerprint(encoded)}
    out = cached("refcache", config, lambda: reference_token_logps(model, encoded, pad_id, batch_size, autocast),
                 root=cache_dir, force=force, code=reference_token_logps)
    return list(torch.as_tensor(out["values"]).split(out["lengths"].tolist()))
