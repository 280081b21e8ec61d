"""Prompt templates, QA encoding with answer-only labels, and dynamic-padding collation.

    ids = encode_qa(tok, "Who wrote X?", "Y did.", "llama2")   # {"input_ids": [...], "labels": [...]}
    batch = collate([ids, ...], pad_id=tok.pad_token_id)          # tensors, right-padded

Templates (tofu-notes section 2): ``llama2`` = ``"[INST] q [/INST]" + answer`` with no system
prompt, as TOFU and open-unlearning format Llama-2-chat; ``qa`` = ``"Question: q\\nAnswer: " + a``
(TOFU's phi/pythia format); ``chat`` = the tokenizer's own chat template with a generation prompt.
Labels are -100 on the first ``len(tok(prompt))`` tokens and cover the rest plus one EOS
(open-unlearning's answer boundary, see ``encode_qa``); attention masks come from sequence lengths,
never from ``input_ids != pad_id`` (an EOS inside the prompt is a real token).
"""
from __future__ import annotations

import torch

from llm.data.tofu import DataError

__all__ = ["TEMPLATES", "IGNORE_INDEX", "format_prompt", "encode_qa", "encode_prompt", "collate"]

IGNORE_INDEX = -100
CHAT = "<tokenizer chat template>"
TEMPLATES = {"llama2": "[INST] {q} [/INST]", "qa": "Question: {q}\nAnswer: ", "chat": CHAT}


def format_prompt(tokenizer, question: str, template: str) -> str:
    """The prompt text that precedes the answer."""
    if template not in TEMPLATES:
        raise DataError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("this tokenizer has no chat template; use --template llama2 or qa")
        return tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                             tokenize=False, add_generation_prompt=True)
    return TEMPLATES[template].format(q=question)


def _tokenize(tokenizer, text: str, template: str) -> list[int]:
    # A chat template already writes its special tokens (BOS included); the others rely on the
    # tokenizer adding BOS, exactly as TOFU's code tokenizes with add_special_tokens=True.
    return list(tokenizer(text, add_special_tokens=template != "chat")["input_ids"])


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True,
                                        add_generation_prompt=add_generation_prompt)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding, 4.x a list
        ids = ids["input_ids"]
    return list(ids)


def eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError("the tokenizer has no EOS token; set tokenizer.eos_token (e.g. "
                        "tok.add_special_tokens({'eos_token': '</s>'})) or use one that has it")
    return int(eos)


def pad_id(tokenizer) -> int:
    """The padding id: the tokenizer's pad token, else EOS (TOFU pads with EOS; masks come from lengths)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else eos_id(tokenizer)


def encode_prompt(tokenizer, question: str, template: str) -> list[int]:
    """Token ids of the prompt alone, the generation input: ``tokenizer(prompt)`` as it stands,
    a trailing space ("Answer: ") included, as open-unlearning generates (see ``encode_qa``)."""
    if template == "chat":
        format_prompt(tokenizer, question, template)  # the one-line error if there is no template
        return _chat_ids(tokenizer, [{"role": "user", "content": question}], True)
    return _tokenize(tokenizer, format_prompt(tokenizer, question, template), template)


def encode_qa(tokenizer, question: str, answer: str, template: str, max_length: int = 512) -> dict:
    """``input_ids`` of prompt + answer + EOS and ``labels`` = -100 on the prompt, ids elsewhere.

    The answer boundary is open-unlearning's (``src/data/utils.py::preprocess_chat_instance``),
    for every template: ``ids = tok(prompt + answer)`` (the chat template applied to the user turn
    plus the assistant answer, for ``chat``), EOS appended unless it is already last, and the first
    ``len(tok(prompt))`` positions (``apply_chat_template(user turn, add_generation_prompt=True)``
    for ``chat``) are unlabelled, whether or not those ids equal the prompt's own. Where a prompt
    ends in a space ("Answer: ") the joint tokenization merges it into the answer's first token
    (" The"); that token then sits inside the unlabelled prefix and is not scored, and the prompt
    we generate from keeps its lone space token (``encode_prompt``). With ``llama2`` ("[/INST]" +
    answer) nothing merges and the boundary is where the answer starts. At least the EOS is a label.
    """
    eos = eos_id(tokenizer)
    if template == "chat":
        user = [{"role": "user", "content": question}]
        format_prompt(tokenizer, question, template)  # the one-line error if there is no template
        prompt_ids = _chat_ids(tokenizer, user, True)
        ids = _chat_ids(tokenizer, user + [{"role": "assistant", "content": answer}], False)
    else:
        prompt = format_prompt(tokenizer, question, template)
        prompt_ids = _tokenize(tokenizer, prompt, template)
        ids = _tokenize(tokenizer, prompt + answer, template)
    if not ids or ids[-1] != eos:
        ids.append(eos)
    n_prompt = min(len(prompt_ids), len(ids) - 1)  # at least the EOS is a label
    if len(ids) > max_length:
        raise DataError(f"a QA pair is {len(ids)} tokens, longer than max_length={max_length} "
                        f"(question {question[:40]!r}); raise --max-length")
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * n_prompt + ids[n_prompt:]}


def collate(batch: list[dict], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest row; mask from each row's length; labels -100 on padding."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if pad_id is None:
        raise DataError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")
    width = max(len(row["input_ids"]) for row in batch)
    out = {"input_ids": [], "attention_mask": []}
    has_labels = all("labels" in row for row in batch)
    if has_labels:
        out["labels"] = []
    for row in batch:
        n = len(row["input_ids"])
        pad = width - n

        def place(values, fill):
            return ([fill] * pad + list(values)) if side == "left" else (list(values) + [fill] * pad)

        out["input_ids"].append(place(row["input_ids"], pad_id))
        out["attention_mask"].append(place([1] * n, 0))
        if has_labels:
            out["labels"].append(place(row["labels"], IGNORE_INDEX))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
