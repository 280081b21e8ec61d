"""Causal LMs for TOFU: local/hub checkpoints, GGUF files, and from-scratch Llama presets.

    model, tok = load_model_and_tokenizer("tiny", data_dir="/path/to/tofu")   # ~1M params, CPU
    model, tok = load_model_and_tokenizer("runs/target")                      # a saved checkpoint
    logp = sequence_logprob(model(**batch).logits, batch["labels"])          # [B], summed

Presets (``PRESETS``) build a Llama config from scratch with a byte-level BPE tokenizer trained
deterministically by ``tokenizers`` on TOFU text (``build_tokenizer``); both are saved with every
checkpoint, so later runs load the directory and never retrain the tokenizer. ``.gguf`` paths (or
``gguf_file=``) load through transformers' GGUF reader, which needs the ``gguf`` package.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from llm.data import DataError, TOFU_SPLITS, load_split, resolve_data_dir
from llm.formatting import IGNORE_INDEX, TEMPLATES

__all__ = ["ModelError", "PRESETS", "load_model_and_tokenizer", "build_tokenizer", "save_tokenizer",
           "sequence_logprob", "token_counts", "token_mean_logp", "default_dtype", "count_parameters",
           "lora_targets", "check_device"]

#: name -> (LlamaConfig overrides, BPE vocabulary size). Sizes are approximate parameter counts.
PRESETS = {
    "tiny": (dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=4), 2048),                               # ~1.0 M
    "small": (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                   num_attention_heads=4), 4096),                              # ~5 M
    "gpu": (dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                 num_attention_heads=8), 8192),                                # ~34 M
}
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>"}
# Llama-2-style chat template so that --template chat also works on preset tokenizers.
PRESET_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                        "[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}"
                        "{% endif %}{% endfor %}")


class ModelError(ValueError):
    """A user-fixable model problem (unknown spec, missing package); one line naming the fix."""


def default_dtype(device) -> torch.dtype:
    """bf16 on GPU (the paper's recipe), fp32 on CPU (bf16 matmuls are slow and inexact there)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_device(device: str) -> None:
    """``--device cuda`` (or cuda:N) on a machine where torch sees no such GPU: one line, not torch's
    AssertionError from deep inside the first ``.to()`` (the trainer calls it before joining a
    process group, every model load calls it too)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"--device must be cpu, cuda, cuda:N or auto, not {device!r}") from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ModelError(f"--device {device}: torch sees no GPU here (torch {torch.__version__}"
                         f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu or auto")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s) "
                         f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")


def load_model_and_tokenizer(spec: str, device="cpu", dtype=None, data_dir=None, seed: int = 0,
                             gguf_file: str | None = None, **kw):
    """(model, tokenizer) from a preset name, a local directory, a hub id, or a .gguf file."""
    check_device(str(device))
    dtype = dtype or default_dtype(device)
    spec = str(spec)
    if spec in PRESETS:
        model, tok = _preset(spec, data_dir, seed)
        model = model.to(dtype)
    else:
        if spec.endswith(".gguf") and gguf_file is None:
            if not Path(spec).is_file():
                raise ModelError(f"GGUF file {spec!r} not found; pass an existing .gguf path")
            spec, gguf_file = str(Path(spec).parent), Path(spec).name
        model, tok = _pretrained(spec, dtype, gguf_file, **kw)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # TOFU pads with EOS; masks come from lengths anyway
    return model.to(device), tok


def _pretrained(spec: str, dtype, gguf_file, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if gguf_file is not None:
        if importlib.util.find_spec("gguf") is None:
            raise ModelError("loading a .gguf file needs the gguf package: pip install gguf "
                             "(or export the model once with save_pretrained and pass that folder)")
        kw["gguf_file"] = gguf_file
    if _looks_local(spec) and not Path(spec).expanduser().exists():
        raise ModelError(f"model folder {spec!r} not found ({Path(spec).expanduser().absolute()}); "
                         f"pass an existing checkpoint folder, a preset ({', '.join(PRESETS)}) or a hub id")
    spec = str(Path(spec).expanduser()) if spec.startswith("~") else spec
    if not Path(spec).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in spec:
        raise ModelError(f"unknown model {spec!r}: use a preset ({', '.join(PRESETS)}), a local "
                         f"checkpoint folder, a .gguf file or a hub id")
    from safetensors import SafetensorError
    try:
        tok = AutoTokenizer.from_pretrained(spec, **kw)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **kw)
    except SafetensorError as e:  # a weights file cut short (a copy or a save that was killed)
        raise ModelError(f"cannot load model {spec!r}: its safetensors weights are damaged ({_first(e)}); "
                         f"copy or re-create the checkpoint") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {spec!r} ({_first(e)}); use a preset ({', '.join(PRESETS)}), "
                         f"a local checkpoint folder, a .gguf file or a reachable hub id") from None
    if gguf_file is not None:
        model = _plain_copy(model)
    return model, tok


def _first(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


def lora_targets(model, spec: str) -> list[str]:
    """The module names of ``--lora-targets`` (comma-separated), each checked to name a linear layer
    of ``model``: peft would raise deep inside for none, and silently adapt fewer for some."""
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in targets if t not in names] if targets else [repr(spec)]
    if missing:
        raise ModelError(f"--lora-targets: {', '.join(missing)} names no linear layer of this model; "
                         f"use some of {', '.join(names)}")
    return targets


def _looks_local(spec: str) -> bool:
    """A path rather than a hub id: starts with '.', '/' or '~', or its first component is a folder
    that exists here (``runs/target`` with ``runs/`` present). Such a value is never sent to the hub,
    so a typo fails at once instead of after the hub's retries."""
    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return True
    first = spec.split("/", 1)[0]
    return "/" in spec and Path(first).is_dir()


def _plain_copy(model):
    """GGUF models are marked quantized and refuse save_pretrained; rebuild a plain copy (same weights)."""
    from transformers import AutoModelForCausalLM
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    plain.load_state_dict(model.state_dict())
    return plain


def _preset(name: str, data_dir, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    overrides, vocab = PRESETS[name]
    tok = build_tokenizer(data_dir, vocab_size=vocab)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **overrides)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tok


def build_tokenizer(data_dir=None, vocab_size: int = 4096):
    """Byte-level BPE trained on TOFU text (deterministic: fixed corpus order, one fixed trainer)."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer
    blob = _trained_tokenizer_json(str(resolve_data_dir(data_dir) or ""), vocab_size)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(blob), **SPECIAL_TOKENS)
    tok.chat_template = PRESET_CHAT_TEMPLATE
    return tok


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(data_dir: str, vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    corpus = _corpus(data_dir or None)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tk.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tk.token_to_id(bos))])
    return tk.to_str()


#: tokenizer classes transformers 5 writes that 4.x lacks -> the 4.x class loading the same files.
#: ``TokenizersBackend`` (5.x's name for a tokenizer.json-backed tokenizer) is what 4.x calls
#: ``PreTrainedTokenizerFast``; open-unlearning pins transformers 4.45.1 and refuses the 5.x name.
TOKENIZER_CLASS_4X = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def save_tokenizer(tokenizer, path) -> None:
    """``tokenizer.save_pretrained(path)``, with a ``tokenizer_class`` that transformers 4.x and 5.x
    both define (so open-unlearning's transformers 4.45.1 loads our checkpoints as saved)."""
    import json

    from infra.files import write_json
    tokenizer.save_pretrained(path)
    config_file = Path(path) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in TOKENIZER_CLASS_4X:
        config["tokenizer_class"] = TOKENIZER_CLASS_4X[config["tokenizer_class"]]
        write_json(config_file, config)  # atomic, as every result file


def _corpus(data_dir) -> list[str]:
    """Every question (also templated) and answer text of the TOFU files present, in fixed order."""
    templates = [t for t in TEMPLATES.values() if "{q}" in t]
    texts = []
    for name in TOFU_SPLITS:
        if name != "full" and not name.endswith("perturbed") and name != "idontknow":
            continue  # forget/retain/holdout duplicate full (or are eval-only text we skip)
        try:
            rows = load_split(name, data_dir)
        except DataError:
            if name == "full":
                raise
            continue
        for r in rows:
            if name == "full":  # questions as the templates wrap them, so "[INST]" etc. merge
                texts += [t.format(q=r["question"]) for t in templates]
            texts += [r[k] for k in ("question", "answer", "paraphrased_answer") if k in r]
            texts += r.get("perturbed_answer", [])
    return texts


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) per row: next-token log-probs at labelled positions, SUMMED. [B]

    Computed in at least float32 via cross_entropy (no [B, T, V] log-softmax copy kept for backward).
    """
    logits = logits[:, :-1, :]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view(targets.shape).sum(-1)


def token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Number of labelled (answer + EOS) tokens per row, after the one-token shift. [B]"""
    return (labels[:, 1:] != IGNORE_INDEX).sum(-1)


def token_mean_logp(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The micro-batch's mean log-prob per answer token, as a one-sample vector for nll/ga_loss."""
    return (logp.sum() / tokens.sum().clamp(min=1)).reshape(1)
