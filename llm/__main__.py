"""``python -m llm <command> ...``: finetune, unlearn, eval, relearn, pipeline, plan,
collapse-rate, lr-sweep, attacks, claims.

Each command lives in its own module and exposes ``main(argv) -> int``; this file only dispatches,
importing the command's module lazily so that ``--help`` stays fast.
"""
from __future__ import annotations

import importlib
import sys

from infra.cli import interruptible

COMMANDS = {
    "finetune": ("llm.train.cli", "finetune_main", "fine-tune a target or retain model on TOFU"),
    "unlearn": ("llm.train.cli", "unlearn_main", "unlearn a forget split (GA, NPO, NPO+RT, ...)"),
    "eval": ("llm.evaluate.cli", "main", "TOFU evaluation: Forget Quality and Model Utility"),
    "relearn": ("llm.studies.relearn", "main", "relearning attack: fine-tune K steps on part of the forget set"),
    "attacks": ("llm.studies.attacks", "main", "both attacks (relearning, quantization) on several models"),
    "pipeline": ("llm.pipeline.cli", "main", "fine-tune, unlearn and evaluate end to end"),
    "collapse-rate": ("llm.studies.collapse_rate", "main", "Theorem 2 on an LM: GA vs NPO divergence rates"),
    "lr-sweep": ("llm.studies.lr_sweep", "main", "TOFU lr sweep: GA/NPO collapse epoch vs lr, clipping, beta"),
    "plan": ("llm.memory", "main", "per-GPU memory plan (ddp or fsdp) from the model config alone"),
    "claims": ("llm.studies.tofu_claims", "main", "the paper's TOFU claims checked against a pipeline's results"),
}


def _usage() -> str:
    lines = ["usage: python -m llm <command> [options]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'python -m llm <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from llm.models import shadowing_llm  # every command imports torch anyway
    warning = shadowing_llm()
    if warning:
        print(warning, file=sys.stderr)
    module, func, _ = COMMANDS[name]
    # Ctrl-C anywhere (also in a command whose body does not go through infra.cli.run): one line, exit 130
    return interruptible(f"python -m llm {name}",
                         lambda rest: getattr(importlib.import_module(module), func)(rest), rest)


if __name__ == "__main__":
    raise SystemExit(main())
