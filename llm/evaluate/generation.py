"""Batched greedy generation for the ROUGE metrics: left padding, KV cache, stop at EOS.

    from llm.evaluate.generation import greedy_generate
    texts = greedy_generate(model, tok, [encode_prompt(tok, q, "llama2") for q in questions])

Prompts are sorted by length (longest first, so memory peaks on the first batch) and left-padded
within each batch, so every row's next token sits in the last column. Decoding is greedy (argmax,
what ``model.generate(do_sample=False)`` does) with the KV cache, written out here so that rows
that have emitted EOS (or any of the model's end-of-turn ids) leave the batch, and its cache, once
they are a quarter of it: ``generate`` would keep computing finished rows until the batch's
longest answer ends. Each output
is the tokens before that stop, decoded without special tokens and stripped, as open-unlearning
does. Results come back in the input order.
"""
from __future__ import annotations

import torch

from llm.data.formatting import collate, eos_id, pad_id

__all__ = ["greedy_generate", "stop_ids"]


def stop_ids(model, tokenizer) -> set[int]:
    """The tokenizer's EOS plus any end-of-turn ids in the model's generation config."""
    ids = {eos_id(tokenizer)}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if extra is not None:
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {int(extra)}
    return ids


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` within 5.x; use the one this has."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


#: a batch drops its finished rows (and their KV cache) once they are this fraction of it: dropping
#: copies the whole cache, so doing it at every stop costs more than the rows it saves
COMPACT_AT = 0.25


def _greedy_batch(model, input_ids, attention_mask, max_new_tokens: int, stops: torch.Tensor) -> list[list[int]]:
    """Greedy new tokens of each left-padded row, up to and including its stop token; finished
    rows leave the batch and the KV cache once they are ``COMPACT_AT`` of it (a row's tokens do
    not depend on the other rows, so when it leaves changes nothing but the work)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    kw = {_cache_kwarg(model): cache, "use_cache": True}
    rows = list(range(input_ids.shape[0]))  # batch row -> output index
    out: list[list[int]] = [[] for _ in rows]
    finished = torch.zeros(len(rows), dtype=torch.bool)
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate does: padding takes no positions
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=1, **kw).logits[:, -1]
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        for r, t, f in zip(rows, nxt.tolist(), finished.tolist()):
            if not f:
                out[r].append(t)
        finished |= torch.isin(nxt, stops).cpu()
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        if int(finished.sum()) >= max(1, COMPACT_AT * len(rows)):
            keep = (~finished).nonzero(as_tuple=True)[0]
            cache.batch_select_indices(keep.to(mask.device))
            rows = [rows[k] for k in keep.tolist()]
            mask, nxt, finished = mask[keep.to(mask.device)], nxt[keep.to(nxt.device)], finished[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        logits = model(input_ids=nxt[:, None], attention_mask=mask,
                       position_ids=mask.sum(-1, keepdim=True) - 1, **kw).logits[:, -1]
    return out


@torch.inference_mode()
def greedy_generate(model, tokenizer, prompts: list[list[int]], batch_size: int = 32,
                    max_new_tokens: int = 200) -> list[str]:
    """Greedy continuations of the prompt token ids, decoded and stripped, in input order."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    stops = stop_ids(model, tokenizer)
    pad = pad_id(tokenizer)
    device = next(model.parameters()).device
    stop_t = torch.tensor(sorted(stops), device=device)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([{"input_ids": prompts[i]} for i in chunk], pad, side="left")
        new_tokens = _greedy_batch(model, batch["input_ids"].to(device),
                                   batch["attention_mask"].to(device), max_new_tokens, stop_t)
        for i, ids in zip(chunk, new_tokens):
            end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
            texts[i] = tokenizer.decode(ids[:end], skip_special_tokens=True).strip()
    return texts
