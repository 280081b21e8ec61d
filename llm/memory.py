"""Per-GPU memory planner: will a training run fit, under ddp or fsdp, before any weight is loaded?

    python -m llm plan --model llama2-7b --gpus 2 --gpu-mem 80 --strategy fsdp
    python -m llm plan --model runs/target --gpus 1 --gpu-mem 24 --method npo --lora --json

Computed from the model's configuration alone: the architecture is built on PyTorch's meta device
(no memory, no weights) to count parameters exactly, and the rest follows from what the trainer
(llm/train/loop.py) keeps alive at its peak, the start of the backward pass:

  params      weights in their storage dtype (fp32 masters under bf16-mixed, bf16 under bf16), plus
              ddp+bf16-mixed: autocast's bf16 copy of every weight; fsdp: 1/N of the weights plus
              two gathered decoder layers (current + prefetched) and the gathered root (embeddings,
              head), in the compute dtype
  grads       one per trainable weight (ddp with N > 1: plus DDP's bucket copy); fsdp: 1/N + the
              unsharded gradients of two layers and the root
  optimizer   AdamW's two moments per trainable weight (fsdp: 1/N; --cpu-offload: in host memory)
  activations tensors saved for backward at micro-batch B x groups sequences of --max-length
              tokens (NPO+RT runs forget and retain rows in one forward: 2 groups): per decoder layer
              and token 9h + 2h_kv + 4i values (a Llama layer's norms, q/k/v, attention output,
              gated MLP; other architectures are approximated by the same count), only the layer
              input with gradient checkpointing (plus one layer recomputed), and at the head the
              logits plus three fp32 [tokens x vocab] tensors (log-softmax, its gradient in and out)
  reference   a live reference model (KL methods, methods that need the reference's per-token
              logits or hidden states, --reference live): a frozen copy (fsdp: 1/N), plus those
              logits / hidden states at every position of a micro-batch; the default cached
              reference costs nothing here
  workspace   a fixed margin (CUDA context, allocator fragmentation, communication buffers)

Counting activations and all gradients at once makes the total an upper bound; how close it is to
the measured peak is measured by benchmarks/bench_plan.py (README). Architectures for llama2-7b
and phi-1.5 ship here as configurations so the planner works offline.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from infra import cli

__all__ = ["PlanError", "ARCHITECTURES", "Setup", "model_config", "count", "plan", "main"]

GB = 1e9

#: config-only architectures (Hugging Face model_type + fields), so planning needs no download.
ARCHITECTURES = {
    "llama2-7b": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "phi-1.5": dict(model_type="phi", vocab_size=51200, hidden_size=2048, intermediate_size=8192,
                    num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                    partial_rotary_factor=0.5, max_position_embeddings=2048, tie_word_embeddings=False),
}
PRECISIONS = ("bf16-mixed", "bf16", "fp32")


class PlanError(ValueError):
    """A user-fixable planning problem; one line naming the fix."""


@dataclass
class Setup:
    model: str
    gpus: int = 1
    gpu_mem: float = 80.0                # GB per GPU
    strategy: str = "ddp"
    method: str = "npo_rt"
    reference: str = "cached"            # cached | live (KL methods are always live)
    batch_size: int = 4                  # micro-batch per GPU
    max_length: int = 500
    precision: str = "bf16-mixed"
    gradient_checkpointing: bool = True
    lora: bool = False
    lora_r: int = 8
    lora_targets: str = "q_proj,v_proj"
    cpu_offload: bool = False
    workspace_gb: float = 1.5


def model_config(spec: str):
    """A transformers config for a shipped architecture, a preset, a checkpoint folder or a hub id."""
    from transformers import AutoConfig, LlamaConfig
    from llm.models import MODEL_PRESETS, SMOL, ModelError, smol_gguf
    if spec in ARCHITECTURES:
        fields = dict(ARCHITECTURES[spec])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    if spec in MODEL_PRESETS:
        overrides, vocab = MODEL_PRESETS[spec]
        return LlamaConfig(vocab_size=vocab, max_position_embeddings=512, **overrides)
    if spec == SMOL or spec.endswith(".gguf"):  # the GGUF's metadata only: nothing dequantised
        try:
            gguf = smol_gguf() if spec == SMOL else Path(spec)
            if not gguf.is_file():
                raise ModelError(f"GGUF file {spec!r} not found; pass an existing .gguf path")
            return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except ModelError as e:
            raise PlanError(str(e)) from None
    if Path(spec).is_dir() or "/" in spec:
        try:
            return AutoConfig.from_pretrained(spec)
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise PlanError(f"cannot read the configuration of {spec!r} ({first}); pass a checkpoint "
                            f"folder with config.json or a reachable hub id") from None
    names = ", ".join([*MODEL_PRESETS, *ARCHITECTURES])
    raise PlanError(f"unknown model {spec!r}; use {names}, a checkpoint folder or a hub id")


@dataclass
class Counts:
    params: int            # every weight
    layer: int             # weights of one decoder layer
    root: int              # weights outside the decoder layers (embeddings, final norm, head)
    layers: int
    hidden: int
    kv_hidden: int
    intermediate: int
    vocab: int
    lora: int              # LoRA adapter weights for the requested targets and rank


def count(config, lora_r: int = 8, lora_targets: str = "q_proj,v_proj", lora: bool = False) -> Counts:
    """Parameter counts of ``config``'s architecture, built on the meta device (no memory);
    ``lora``: refuse targets the model lacks, as the trainer does."""
    from transformers import AutoModelForCausalLM

    from llm.models import ModelError, lora_targets as checked_targets
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    if lora:
        try:
            checked_targets(model, lora_targets)
        except ModelError as e:
            raise PlanError(str(e)) from None
    from llm.train.distributed import decoder_layers
    layers = decoder_layers(model)
    total = sum(p.numel() for p in model.parameters())
    per_layer = sum(p.numel() for p in layers[0].parameters()) if layers else 0
    targets = {t.strip() for t in lora_targets.split(",") if t.strip()}
    lora = sum(lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return Counts(total, per_layer, total - per_layer * len(layers), len(layers), config.hidden_size,
                  config.hidden_size * kv // heads, config.intermediate_size, config.vocab_size, lora)


def _groups(method: str) -> int:
    """Sequence groups per forward: forget, + retain for RT/KL methods, + IDK for DPO/KTO/IDK."""
    from llm.train.methods import REGISTRY
    if method == "finetune":
        return 1
    if method not in REGISTRY:
        raise PlanError(f"unknown --method {method!r}; use finetune or one of {', '.join(REGISTRY)}")
    need = REGISTRY[method].needs
    return 1 + bool(need & {"retain", "kl"}) + ("idk" in need)


def _live_reference(s: Setup) -> bool:
    from llm.train.methods import get
    from llm.train.methods.inputs import LIVE_NEEDS
    return s.method != "finetune" and (bool(get(s.method).needs & LIVE_NEEDS) or s.reference == "live")


def _method_tensors(s: Setup, c: Counts, a: int) -> tuple[float, float]:
    """(reference, activations) bytes of the per-token tensors a method keeps until its loss, at
    every position of a micro-batch's rows (an upper bound: only answer positions are kept):
    "ref_logits" the reference's logits (compute dtype) with their fp32 copy and fp32 target
    distribution; "hidden" the reference's hidden states on the retain rows; "logits" an fp32
    target distribution (CE-U). The current model's own logits and hidden states are activations."""
    if s.method == "finetune":
        return 0.0, 0.0
    from llm.train.methods import get
    need, tokens = get(s.method).needs, s.batch_size * s.max_length
    reference = tokens * c.vocab * (a + 8) * ("ref_logits" in need) + tokens * c.hidden * a * ("hidden" in need)
    return reference, tokens * c.vocab * 4 * ("logits" in need)


def check(s: Setup) -> None:
    if s.gpus < 1:
        raise PlanError(f"--gpus must be >= 1 (got {s.gpus})")
    if not s.gpu_mem > 0:
        raise PlanError(f"--gpu-mem must be > 0 GB (got {s.gpu_mem})")
    if s.strategy not in ("ddp", "fsdp"):
        raise PlanError(f"--strategy must be ddp or fsdp, not {s.strategy!r}")
    if s.precision not in PRECISIONS:
        raise PlanError(f"--precision must be one of {', '.join(PRECISIONS)}, not {s.precision!r}")
    if s.reference not in ("cached", "live"):
        raise PlanError(f"--reference must be cached or live, not {s.reference!r}")
    for name in ("batch_size", "max_length"):
        if getattr(s, name) < 1:
            raise PlanError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(s, name)})")
    if s.cpu_offload and s.strategy != "fsdp":
        raise PlanError("--cpu-offload needs --strategy fsdp")
    if s.lora and s.strategy == "fsdp":
        raise PlanError("--lora is not supported with --strategy fsdp (the trainer refuses it); use ddp")


def plan(s: Setup, counts: Counts | None = None) -> dict:
    """Per-GPU memory breakdown (GB) of ``s``; ``counts`` skips building the architecture."""
    check(s)
    groups = _groups(s.method)
    c = counts or count(model_config(s.model), s.lora_r, s.lora_targets, lora=s.lora)
    w = 2 if s.precision == "bf16" else 4            # storage bytes of weights, grads, AdamW moments
    a = 4 if s.precision == "fp32" else 2            # compute (activation) bytes
    trainable = c.lora if s.lora else c.params
    n = s.gpus if s.strategy == "fsdp" else 1
    gathered = (2 * c.layer + c.root) * a if s.strategy == "fsdp" else 0   # unsharded in compute
    resident = 0 if s.cpu_offload else 1             # sharded state on the GPU, or in host memory
    params = c.params * w / n * resident + gathered + (s.lora and c.lora * w or 0)
    if s.strategy == "ddp" and s.precision == "bf16-mixed":
        params += c.params * 2                      # autocast's bf16 copies, alive until backward
    grads = trainable * w / n * resident + gathered
    if s.strategy == "ddp" and s.gpus > 1:
        grads += trainable * w                      # DDP's gradient buckets
    optimizer = 2 * trainable * w / n * resident
    reference = c.params * w / n * resident if _live_reference(s) and not s.lora else 0.0
    tokens = s.batch_size * groups * s.max_length
    per_layer = (9 * c.hidden + 2 * c.kv_hidden + 4 * c.intermediate) * a
    if s.gradient_checkpointing:
        layers = c.layers * c.hidden * a + per_layer
    else:
        layers = c.layers * per_layer
    activations = tokens * (layers + c.vocab * (a + 3 * 4))
    extra_reference, extra_activations = _method_tensors(s, c, a)
    reference += extra_reference
    activations += extra_activations
    parts = {"params": params, "grads": grads, "optimizer": optimizer, "activations": activations,
             "reference": reference, "workspace": s.workspace_gb * GB}
    per_gpu = {k: v / GB for k, v in parts.items()}
    per_gpu["total"] = sum(per_gpu.values())
    return {"model": s.model, "params": c.params, "trainable": trainable, "strategy": s.strategy,
            "gpus": s.gpus, "gpu_mem_gb": s.gpu_mem, "per_gpu_gb": per_gpu,
            "fits": per_gpu["total"] <= s.gpu_mem, "setup": asdict(s)}


# ---- command line ------------------------------------------------------------------------------

PROG = "python -m llm plan"


def _parser() -> argparse.ArgumentParser:
    d = Setup(model="")
    p = cli.parser(PROG, __doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="preset (tiny, small, gpu), llama2-7b, phi-1.5, "
                   "smol (SmolLM2-135M-Instruct), a .gguf file, a checkpoint folder or a hub id")
    p.add_argument("--gpus", type=int, default=d.gpus, help="GPUs (processes) in the run")
    p.add_argument("--gpu-mem", type=float, default=d.gpu_mem, help="memory per GPU in GB")
    p.add_argument("--strategy", default=d.strategy, help="ddp or fsdp")
    p.add_argument("--method", default=d.method, help="finetune or an unlearning method")
    p.add_argument("--reference", default=d.reference, help="cached or live")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="micro-batch per GPU")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per sequence")
    p.add_argument("--precision", default=d.precision, help=" | ".join(PRECISIONS))
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   default=d.gradient_checkpointing, help="only the layer inputs saved for backward")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    p.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank")
    p.add_argument("--lora-targets", default=d.lora_targets, help="modules LoRA adapts")
    p.add_argument("--cpu-offload", action="store_true", help="fsdp: sharded state in host memory")
    p.add_argument("--workspace-gb", type=float, default=d.workspace_gb, help="fixed margin per GPU")
    return p


def _table(r: dict) -> str:
    g = r["per_gpu_gb"]
    lines = [f"{r['model']}: {r['params'] / 1e9:.3f} B parameters ({r['trainable'] / 1e9:.3f} B trainable), "
             f"{r['strategy']} on {r['gpus']} GPU(s) of {r['gpu_mem_gb']:g} GB"]
    lines += [f"  {k:<12}{g[k]:9.2f} GB" for k in ("params", "grads", "optimizer", "activations",
                                                  "reference", "workspace")]
    lines.append(f"  {'total':<12}{g['total']:9.2f} GB per GPU -> "
                 f"{'fits' if r['fits'] else 'does NOT fit'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return cli.run(PROG, _main, _parser().parse_args(argv), user_errors=(PlanError,))


def _main(args) -> int:
    args = vars(args)
    as_json = args.pop("json")
    result = plan(Setup(**args))
    print(json.dumps(result, sort_keys=True) if as_json else _table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
