"""Causal LMs for TOFU: local/hub checkpoints, GGUF files, and from-scratch Llama presets.

    model, tok = load_model_and_tokenizer("tiny", data_dir="/path/to/tofu")   # ~1M params, CPU
    model, tok = load_model_and_tokenizer("runs/target")                      # a saved checkpoint
    logp = sequence_logprob(model(**batch).logits, batch["labels"])          # [B], summed
    logp = answer_logprob(model, batch["input_ids"], batch["attention_mask"], batch["labels"])  # same

Presets (``MODEL_PRESETS``) build a Llama config from scratch with a byte-level BPE tokenizer trained
deterministically by ``tokenizers`` on TOFU text (``build_tokenizer``); both are saved with every
checkpoint, so later runs load the directory and never retrain the tokenizer. ``.gguf`` paths (or
``gguf_file=``) load through transformers' GGUF reader, which needs the ``gguf`` package.

``smol`` (SmolLM2-135M-Instruct) and ``.gguf`` files are located, dequantised once and cached by
llm/gguf.py, whose names this module re-exports.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from llm.data.tofu import DataError, TOFU_SPLITS, load_split, resolve_data_dir
from llm.data.formatting import IGNORE_INDEX, TEMPLATES
from llm.gguf import (MODEL_CACHE, PACKAGE_PATH, SMOL, SMOL_FILE, SMOL_INSTALL,  # noqa: F401 (re-exported)
                      SMOL_PACKAGE, _plain_copy, gguf_model_dir, shadowing_llm, smol_gguf,
                      weights_identity)

__all__ = ["ModelError", "MODEL_PRESETS", "SMOL", "load_model_and_tokenizer", "build_tokenizer", "save_tokenizer",
           "sequence_logprob", "token_counts", "token_mean_logp", "default_dtype", "count_parameters",
           "label_positions", "logits_at", "answer_logprob", "row_sums", "default_template",
           "smol_gguf", "gguf_model_dir", "weights_identity", "shadowing_llm", "lora_targets", "check_device"]

#: name -> (LlamaConfig overrides, BPE vocabulary size). Sizes are approximate parameter counts.
MODEL_PRESETS = {
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
    if spec in MODEL_PRESETS:
        model, tok = _preset(spec, data_dir, seed)
        model = model.to(dtype)
    else:
        if spec == SMOL:
            spec = str(gguf_model_dir(smol_gguf()))
        elif spec.endswith(".gguf") and gguf_file is None:
            if not Path(spec).is_file():
                raise ModelError(f"GGUF file {spec!r} not found; pass an existing .gguf path")
            spec = str(gguf_model_dir(Path(spec)))
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
                         f"pass an existing checkpoint folder, a preset ({', '.join(MODEL_PRESETS)}) or a hub id")
    spec = str(Path(spec).expanduser()) if spec.startswith("~") else spec
    if not Path(spec).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in spec:
        raise ModelError(f"unknown model {spec!r}: use a preset ({', '.join(MODEL_PRESETS)}), a local "
                         f"checkpoint folder, a .gguf file or a hub id")
    from safetensors import SafetensorError
    try:
        tok = AutoTokenizer.from_pretrained(spec, **kw)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **kw)
    except SafetensorError as e:  # a weights file cut short (a copy or a save that was killed)
        raise ModelError(f"cannot load model {spec!r}: its safetensors weights are damaged ({_first(e)}); "
                         f"copy or re-create the checkpoint") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {spec!r} ({_first(e)}); use a preset ({', '.join(MODEL_PRESETS)}), "
                         f"a local checkpoint folder, a .gguf file or a reachable hub id") from None
    if gguf_file is not None:
        model = _plain_copy(model)
    return model, tok


def default_template(spec: str) -> str:
    """The prompt template a model is used with unless ``--template`` says otherwise: ``chat`` for
    ``smol`` and ``.gguf`` files (instruction-tuned models with their own chat template), the one a
    checkpoint was trained with (its ``train_config.json``), else ``llama2`` (TOFU's format)."""
    spec = str(spec)
    if spec == SMOL or spec.endswith(".gguf"):
        return "chat"
    try:
        return json.loads((Path(spec) / "train_config.json").read_text())["template"]
    except (OSError, ValueError, KeyError, TypeError):
        return "llama2"


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


def _preset(name: str, data_dir, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    overrides, vocab = MODEL_PRESETS[name]
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


# ---- the vocabulary projection at the positions that are used ------------------------------------
# A TOFU sequence is ~half prompt; the prompt's V-way projections (V = 49k for SmolLM2) and their
# log-softmax are wasted work in every forward that only needs answer log-probs. ``logits_at``
# runs the model's own forward (so DDP, FSDP2's root unshard, PEFT and autocast all apply as usual)
# with the output head swapped for one that first keeps the hidden states at the wanted positions.

def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: positions whose logits predict a labelled token (the next one)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def _unwrapped(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def _head_at(head, keep: torch.Tensor):
    own = head.__dict__.get("forward")  # an instance-level forward (e.g. a hook library's) to restore
    inner = head.forward

    def forward(hidden):
        h = hidden[keep]
        # Under autocast the head would run in bf16 and round the logits to ~3 digits before the
        # log-softmax; with fp32 weights run it in fp32 instead (it now costs a few % of the step).
        if torch.is_autocast_enabled(h.device.type) and h.is_floating_point() \
                and getattr(head, "weight", None) is not None and head.weight.dtype == torch.float32:
            with torch.autocast(h.device.type, enabled=False):
                return inner(h.float())
        return inner(h)

    head.forward = forward
    try:
        yield
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def logits_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              keep: torch.Tensor, **kw) -> torch.Tensor:
    """[N, V] logits at the N positions where ``keep`` [B, T] is True (row-major order); ``kw``
    go to the forward (a KV cache and position ids: llm/evaluate/forward.py)."""
    kw.setdefault("use_cache", False)
    get_head = getattr(_unwrapped(model), "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if head is None:  # no separable head: full forward, then select
        return model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[keep]
    with _head_at(head, keep):
        return model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits


def row_sums(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[B] sums of the [N] per-position ``values`` (ordered as ``keep`` [B, T] selects them) by row."""
    rows = keep.nonzero(as_tuple=True)[0]
    return torch.zeros(keep.shape[0], dtype=values.dtype, device=values.device).index_add(0, rows, values)


def answer_logprob(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """``sequence_logprob`` of one forward, projecting onto the vocabulary only at the labelled
    positions: log pi(answer | prompt) per row, summed, log-softmax in float32. [B]"""
    keep = label_positions(labels)
    logits = logits_at(model, input_ids, attention_mask, keep)
    nll = F.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]], reduction="none")
    return row_sums(-nll, keep)


def answer_token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``answer_logprob`` per token: ([N] log pi of each answer token, float32, ordered as ``keep``
    selects its predicting positions; ``keep`` = label_positions(labels) [B, T])."""
    keep = label_positions(labels)
    logits = logits_at(model, input_ids, attention_mask, keep)
    return -F.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]], reduction="none"), keep
