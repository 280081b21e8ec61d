"""Checkpoints we save load in transformers 4.x too (open-unlearning pins 4.45.1)."""
from __future__ import annotations

import json

import pytest

from llm.models import build_tokenizer, save_tokenizer
from llm.train.cli import finetune_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: tokenizer classes transformers 4.45.1 defines (checked by importing each from 4.45.1) that a
#: tokenizer.json-backed tokenizer can be saved under; 5.x's "TokenizersBackend" is not among them.
CLASSES_4X = {"PreTrainedTokenizerFast", "LlamaTokenizer", "LlamaTokenizerFast", "GPT2TokenizerFast"}


def test_saved_tokenizer_names_a_4x_class_and_reloads_the_same_ids(tofu_dir, tmp_path):
    from transformers import AutoTokenizer
    tok = build_tokenizer(tofu_dir, vocab_size=2048)
    assert type(tok).__name__ not in CLASSES_4X  # transformers 5 would write a 5.x-only name
    save_tokenizer(tok, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in CLASSES_4X
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "[INST] Who wrote it? [/INST]The author did."
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.eos_token_id == tok.eos_token_id and again.pad_token_id == tok.pad_token_id


def test_finetune_checkpoint_tokenizer_class_exists_in_4x(tofu_dir, tmp_path):
    out = tmp_path / "ft"
    assert finetune_main(["--model", "tiny", "--data-dir", str(tofu_dir), "--max-examples", "4",
                          "--epochs", "1", "--batch-size", "2", "--effective-batch", "2",
                          "--out", str(out)]) == 0
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in CLASSES_4X
