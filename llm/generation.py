"""Batched greedy generation for the ROUGE metrics: left padding, KV cache, stop at EOS.

    from llm.generation import greedy_generate
    texts = greedy_generate(model, tok, [encode_prompt(tok, q, "llama2") for q in questions])

Prompts are sorted by length (longest first, so memory peaks on the first batch) and left-padded
within each batch, so every row's next token sits in the last column; ``model.generate`` runs with
``do_sample=False`` and the KV cache, and stops a batch once every row has produced EOS. Each
output is cut at its first EOS (or any of the model's end-of-turn ids), decoded without special
tokens and stripped, as open-unlearning does. Results come back in the input order.
"""
from __future__ import annotations

import torch

from llm.formatting import collate, eos_id, pad_id

__all__ = ["greedy_generate", "stop_ids"]


def stop_ids(model, tokenizer) -> set[int]:
    """The tokenizer's EOS plus any end-of-turn ids in the model's generation config."""
    ids = {eos_id(tokenizer)}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if extra is not None:
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {int(extra)}
    return ids


def _generation_config(model, max_new_tokens: int, stops: set[int], pad: int):
    from transformers import GenerationConfig
    # Explicit neutral sampling fields: a checkpoint's own generation_config (e.g. Llama-2-chat's
    # temperature 0.6 / top_p 0.9) would otherwise be merged in and warned about under greedy decoding.
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            eos_token_id=sorted(stops), pad_token_id=pad, use_cache=True,
                            temperature=1.0, top_p=1.0, top_k=50)


@torch.inference_mode()
def greedy_generate(model, tokenizer, prompts: list[list[int]], batch_size: int = 32,
                    max_new_tokens: int = 200) -> list[str]:
    """Greedy continuations of the prompt token ids, decoded and stripped, in input order."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    stops = stop_ids(model, tokenizer)
    pad = pad_id(tokenizer)
    config = _generation_config(model, max_new_tokens, stops, pad)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([{"input_ids": prompts[i]} for i in chunk], pad, side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.generate(**batch, generation_config=config)
        new_tokens = out[:, batch["input_ids"].shape[1]:].tolist()
        for i, ids in zip(chunk, new_tokens):
            end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
            texts[i] = tokenizer.decode(ids[:end], skip_special_tokens=True).strip()
    return texts
