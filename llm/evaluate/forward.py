"""Teacher-forced scoring of the TOFU eval sequences: mean answer NLL per sequence, batched.

Each eval question comes with up to 7 answers (the answer, the paraphrase, 5 perturbed ones), so
most of the tokens of a naive batch are the same question prefix again (about half of them with
SmolLM2's chat template). ``score_sequences`` therefore splits every sequence at its first scored
position: the unscored prefix (template + question) runs once per distinct prefix, with the KV
cache kept; the answers then run from copies of that cache. The logits that predict the first
answer token come from the prefix's last position, the rest from the answer pass, where the
vocabulary is projected only at the positions whose log-probs are used (``llm.models.logits_at``).
The result is the full forward's to float tolerance (tests/test_llm_eval.py checks both). A model
without a separable head or a KV cache gets one full forward per batch instead.

Batches are length-sorted and dynamically padded under a token budget (``length_batches``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llm.data.formatting import IGNORE_INDEX, collate

__all__ = ["MAX_PADDING", "length_batches", "score_sequences", "answer_losses"]

#: scoring batches hold rows at least (1 - MAX_PADDING) x as long as their longest row
MAX_PADDING = 0.1
#: largest number of logits (positions x vocabulary) one answer pass holds
LOGITS_BUDGET = 1 << 28


def length_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped for dynamically padded batches: longest first, rows x width <=
    max_batch_tokens, and no row shorter than (1 - MAX_PADDING) x the batch's width (padding is
    wasted compute)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        width = lengths[order[start]]
        chunk = order[start:start + max(1, max_batch_tokens // max(1, width))]
        chunk = [i for i in chunk if lengths[i] >= (1 - MAX_PADDING) * width]
        batches.append(chunk)
        start += len(chunk)
    return batches


def _split(enc: dict) -> tuple[tuple, list[int], list[int]]:
    """(prefix ids, suffix ids, suffix labels): the prefix ends at the first position whose logits
    predict a labelled token, so it holds no scored position but its last."""
    labels = enc["labels"]
    first = next(j for j in range(len(labels) - 1) if labels[j + 1] != IGNORE_INDEX)
    return tuple(enc["input_ids"][:first + 1]), enc["input_ids"][first + 1:], labels[first + 1:]


def _shares_prefix(model) -> bool:
    """Prefix sharing needs a separable output head and a forward that takes a KV cache."""
    import inspect

    from llm.evaluate.generation import _cache_kwarg
    from llm.models import _unwrapped
    inner = _unwrapped(model)
    get_head = getattr(inner, "get_output_embeddings", None)
    return (get_head is not None and get_head() is not None and hasattr(inner, "config")
            and _cache_kwarg(model) in inspect.signature(model.forward).parameters)


class _Scores:
    """Per-sequence sums of log-probs and counts, and (for the ``detail`` indices) the rows of
    logits in sequence order, filled in by the passes."""

    def __init__(self, n: int, detail, detail_fn):
        self.logp = np.zeros(n, dtype=np.float64)  # summed log-probs
        self.count = np.zeros(n, dtype=np.int64)
        self.detail, self.detail_fn = set(detail), detail_fn
        self.rows: dict[int, list] = {}
        self.details: dict[int, dict] = {}

    def add(self, idx: list[int], logits: torch.Tensor, targets: torch.Tensor, counts: list[int]) -> None:
        """Add the positions of sequences ``idx``: logits [n, V] (row-major, ``counts`` rows each)
        predicting targets [n]."""
        logits = logits.float()
        lp = -F.cross_entropy(logits, targets, reduction="none").double()
        rows = torch.repeat_interleave(torch.arange(len(idx), device=lp.device),
                                       torch.tensor(counts, device=lp.device))
        sums = torch.zeros(len(idx), dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)
        np.add.at(self.logp, idx, sums.cpu().numpy())
        np.add.at(self.count, idx, counts)
        ends = np.cumsum(counts).tolist()
        for row, i in enumerate(idx):
            if i in self.detail:
                part = slice(ends[row - 1] if row else 0, ends[row])
                self.rows.setdefault(i, []).append((logits[part], targets[part]))

    def finish(self) -> tuple[np.ndarray, dict[int, dict]]:
        out = -self.logp / self.count
        for i, parts in self.rows.items():
            logits = torch.cat([p[0] for p in parts])
            targets = torch.cat([p[1] for p in parts])
            logp = torch.log_softmax(logits, -1)
            self.details[i] = self.detail_fn(logp, targets)
            out[i] = -float(logp.gather(1, targets[:, None])[:, 0].double().mean())
        return out, self.details


def _full_batches(model, encoded, pad_id, max_batch_tokens, scores: _Scores, device) -> None:
    from llm.models import label_positions, logits_at
    for chunk in length_batches([len(e["input_ids"]) for e in encoded], max_batch_tokens):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in chunk], pad_id).items()}
        keep = label_positions(batch["labels"])
        logits = logits_at(model, batch["input_ids"], batch["attention_mask"], keep)
        scores.add(chunk, logits, batch["labels"][:, 1:][keep[:, :-1]], keep.sum(1).tolist())


def _shared_prefix_batches(model, encoded, pad_id, max_batch_tokens, scores: _Scores, device) -> None:
    from transformers import DynamicCache

    from llm.evaluate.generation import _cache_kwarg
    from llm.models import _unwrapped, label_positions, logits_at
    cache_kw = _cache_kwarg(model)
    config = _unwrapped(model).config
    groups: dict[tuple, list[tuple[int, list[int], list[int]]]] = {}
    for i, e in enumerate(encoded):
        prefix, ids, labels = _split(e)
        groups.setdefault(prefix, []).append((i, ids, labels))
    prefixes = list(groups)
    # nearly every answer-pass position is projected: keep its [tokens, V] float32 logits <= 1 GiB
    budget = max(1, min(max_batch_tokens, LOGITS_BUDGET // config.vocab_size))
    for chunk in length_batches([len(p) for p in prefixes], max_batch_tokens):
        # 1. the prefixes, left-padded: their KV cache and the logits at their last position
        batch = collate([{"input_ids": list(prefixes[g])} for g in chunk], pad_id, side="left")
        pmask = batch["attention_mask"].to(device)
        cache = DynamicCache(config=config)
        last = torch.zeros_like(pmask, dtype=torch.bool)
        last[:, -1] = True
        first = logits_at(model, batch["input_ids"].to(device), pmask, last, use_cache=True,
                          position_ids=(pmask.cumsum(-1) - 1).clamp(min=0), **{cache_kw: cache})
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        plen = pmask.sum(-1)
        # 2. the suffixes (answers) of those prefixes, right-padded, each from its prefix's cache
        rows = [(g, *s) for g, p in enumerate(chunk) for s in groups[prefixes[p]]]
        for sub in length_batches([len(r[2]) for r in rows], budget):
            part = [rows[k] for k in sub]
            g = torch.tensor([r[0] for r in part], device=device)
            idx = [r[1] for r in part]
            scores.add(idx, first[g], torch.tensor([r[2][0] for r in part], device=device), [1] * len(part))
            sb = {k: v.to(device) for k, v in
                  collate([{"input_ids": r[2], "labels": r[3]} for r in part], pad_id).items()}
            keep = label_positions(sb["labels"])
            if not bool(keep.any()):
                continue
            mask = torch.cat([pmask[g], sb["attention_mask"]], 1)
            positions = plen[g, None] + torch.arange(sb["input_ids"].shape[1], device=device)
            sub_cache = DynamicCache([(k[g], v[g]) for k, v in kv], config=config)
            logits = logits_at(model, sb["input_ids"], mask, keep, position_ids=positions,
                               use_cache=True, **{cache_kw: sub_cache})
            scores.add(idx, logits, sb["labels"][:, 1:][keep[:, :-1]], keep.sum(1).tolist())


def score_sequences(model, encoded: list[dict], pad_id: int, max_batch_tokens: int = 16384,
                    detail=(), detail_fn=None, bf16: bool = False) -> tuple[np.ndarray, dict[int, dict]]:
    """Mean token NLL of each encoded QA (answer + EOS labels) -> [n] float64; and, for the
    indices in ``detail``, ``detail_fn(logp [n_tokens, V], targets [n_tokens])`` -> {index: dict}
    from the same forward (the MIA statistics, llm/evaluate/membership.py). Log-softmax in float32."""
    scores = _Scores(len(encoded), detail, detail_fn)
    device = next(model.parameters()).device
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        if _shares_prefix(model):
            _shared_prefix_batches(model, encoded, pad_id, max_batch_tokens, scores, device)
        else:
            _full_batches(model, encoded, pad_id, max_batch_tokens, scores, device)
    return scores.finish()


def answer_losses(model, encoded: list[dict], pad_id: int, max_batch_tokens: int = 16384) -> np.ndarray:
    """Mean token NLL of each encoded QA (answer + EOS labels): ``score_sequences`` without details."""
    return score_sequences(model, encoded, pad_id, max_batch_tokens)[0]
