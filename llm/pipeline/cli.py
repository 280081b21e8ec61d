"""``python -m llm pipeline``: the command line of the TOFU pipeline (llm/pipeline/run.py).

    python -m llm pipeline --preset cpu                                        # minutes, 2 CPU cores
    python -m llm pipeline --preset cpu --seeds 3                              # seeds 0, 1, 2
    python -m llm pipeline --preset gpu --data-dir DIR --tasks forget10 \\
        --methods GA GA+RT NPO NPO+RT --out results/tofu_gpu                     # one GPU
    python -m llm pipeline --preset paper --model /path/Llama-2-7b-chat-hf --data-dir ...
    python -m figures                                                          # figures from the logs
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from infra.cli import check_output_dir, parser, run
from llm.pipeline.environment import main_rank
from llm.pipeline.run import Options, check_attacks_strategy, run_pipeline
from llm.train.config import HparamAction
from llm.train.methods import REGISTRY
from llm.pipeline.plan import PRESETS, TASKS, PipelineError, plan_runs

__all__ = ["build_options", "main"]


def build_options(args) -> Options:
    p = dataclasses.replace(PRESETS[args.preset])
    if args.model:
        p.model = args.model
    if not p.model:
        raise PipelineError(f"preset {args.preset!r} needs --model PATH (a local checkpoint folder, "
                            f"e.g. Llama-2-7b-chat-hf)")
    if args.seeds is not None:
        if args.seeds < 1:
            raise PipelineError(f"--seeds must be >= 1 (got {args.seeds}); it counts the seeds 0..N-1")
        p.seeds = tuple(range(args.seeds))
    for name in ("tasks", "methods", "rt_ablation", "npo_betas", "clip_ablation"):
        value = getattr(args, name)
        if value is not None:
            setattr(p, name, tuple(value))
            if name == "methods":
                p.task_methods = {}
    bad = [t for t in p.tasks if t not in TASKS]
    if bad:
        raise PipelineError(f"unknown task {bad[0]!r}; use any of {', '.join(TASKS)}")
    labels = [m.label for m in REGISTRY.values()]
    bad = [m for m in (*p.methods, *p.clip_ablation) if m not in labels]
    if bad:
        raise PipelineError(f"unknown method {bad[0]!r}; use any of {' '.join(labels)}")
    if args.hparams:
        _check_hparams(p, args.hparams)
    for recipe, prefix in (("finetune", "ft"), ("unlearn", "unlearn")):
        for knob in ("epochs", "lr"):
            value = getattr(args, f"{prefix}_{knob}")
            if value is not None:
                if not value > 0:
                    raise PipelineError(f"--{prefix}-{knob} must be > 0")
                setattr(p, recipe, dataclasses.replace(getattr(p, recipe), **{knob: value}))
    if args.qa_per_author is not None:
        p.qa_per_author = args.qa_per_author
    if args.ds_size is not None:
        p.ds_size = args.ds_size
    if args.numerics is not None:
        from llm.evaluate.metrics import NUMERICS
        if args.numerics not in NUMERICS:
            raise PipelineError(f"unknown --numerics {args.numerics!r}; use exact or ou")
        p.numerics = args.numerics
    if args.max_new_tokens is not None:
        p.max_new_tokens = args.max_new_tokens
        p.sample_tokens = min(p.sample_tokens, args.max_new_tokens)
    for name in ("qa_per_author", "ds_size", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')} must be >= 1")
    if not 1 <= p.qa_per_author <= 20:
        raise PipelineError("--qa-per-author must be in 1..20")
    from llm.data.tofu import hub_data_dir, resolve_data_dir
    data_dir = resolve_data_dir(args.data_dir) or hub_data_dir()  # DataError (one line) if none
    if not (data_dir / "full.json").exists() and not (data_dir / "full.jsonl").exists():
        raise PipelineError(f"{data_dir} has no full.json; point --data-dir at a TOFU copy")
    out = Path(args.out or f"results/tofu_{args.preset}")
    work = Path(args.work or f"results/work/tofu_{args.preset}")
    for flag, path in (("--out", out), ("--work", work)):  # before hours of stages, not after
        try:
            check_output_dir(path, flag)
        except ValueError as e:
            raise PipelineError(str(e)) from None
    # --preset paper over several processes (torchrun / accelerate launch) shards with FSDP
    strategy = args.strategy or ("fsdp" if args.preset == "paper" and int(os.environ.get("WORLD_SIZE", "1")) > 1
                                 else None)
    check_attacks_strategy(args.attacks, strategy)   # before any stage, as run_pipeline checks it too
    if strategy == "fsdp" and "WORLD_SIZE" not in os.environ:
        from llm.train.distributed import launch_hint
        raise PipelineError(launch_hint("pipeline"))
    return Options(args.preset, p, data_dir, out, work, args.device, not args.no_extras, args.force,
                   args.keep_models, strategy, args.attacks)


def _check_hparams(p, given: dict) -> None:
    """--hp: every name must belong to a selected method outside the paper's grid, and each value
    must pass that method's checks; the values (typed) become the preset's ``hparams``."""
    from llm.train.methods import by_label, resolve_hparams
    from llm.pipeline.plan import PAPER_GRID
    extra = [by_label(m) for m in p.methods if m not in PAPER_GRID]
    typed = {}
    for name, value in given.items():
        owners = [m for m in extra if name in m.hparams]
        if not owners:
            raise PipelineError(f"--hp {name}: no selected method outside the paper's grid declares it "
                                f"(the grid's knobs are the recipe's); see python -m llm unlearn --help")
        for m in owners:
            try:
                typed[name] = resolve_hparams(m, {name: value})[name]
            except ValueError as e:
                raise PipelineError(str(e)) from None
    p.hparams = typed


PROG = "python -m llm pipeline"


def _parser():
    ap = parser(PROG, __doc__)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="scale preset")
    ap.add_argument("--model", default=None, help="base model (preset name or checkpoint folder); "
                    "default: the preset's")
    ap.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    ap.add_argument("--tasks", nargs="+", default=None, help=f"forget tasks ({' '.join(TASKS)})")
    ap.add_argument("--methods", nargs="*", default=None, help=f"methods by label ({' '.join(m.label for m in REGISTRY.values())}; "
                    f"default: the paper's grid; none: only the extra runs below)")
    ap.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="run every unlearning run with seeds 0..N-1 (default: the preset's, "
                         "1 for cpu and gpu, 5 for paper)")
    ap.add_argument("--rt-ablation", nargs="*", type=float, default=None,
                    help="extra NPO+RT retain weights on forget10 (Fig. 11)")
    ap.add_argument("--npo-betas", nargs="*", type=float, default=None,
                    help="extra NPO runs at these betas on every task (default: the preset's; smol: 1)")
    ap.add_argument("--clip-ablation", nargs="*", default=None, metavar="METHOD",
                    help="extra runs of these methods on forget10 with gradient clipping off "
                         "(tag no_clip), e.g. GA NPO")
    ap.add_argument("--no-extras", action="store_true",
                    help="main grid only: no large-RT-weight (Fig. 8) or ablation (Fig. 11) runs")
    ap.add_argument("--ft-epochs", type=int, default=None, help="override fine-tuning epochs")
    ap.add_argument("--unlearn-epochs", type=int, default=None, help="override unlearning epochs")
    ap.add_argument("--ft-lr", type=float, default=None, help="override the fine-tuning learning rate")
    ap.add_argument("--unlearn-lr", type=float, default=None, help="override the unlearning learning rate")
    ap.add_argument("--qa-per-author", type=int, default=None, help="override the data subset")
    ap.add_argument("--ds-size", type=int, default=None, help="override eval items per set")
    ap.add_argument("--numerics", default=None, metavar="{exact,ou}", help="evaluation numerics "
                    "(default exact; ou = open-unlearning's float32 and 1e-10 guards, "
                    "docs/eval-parity.md); recorded in every summary")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="override the tokens generated per answer in evaluation (ROUGE-L, samples)")
    ap.add_argument("--out", default=None, help="result logs (default results/tofu_<preset>)")
    ap.add_argument("--work", default=None, help="models and stage folders "
                    "(default results/work/tofu_<preset>)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), default=None,
                    help="multi-process training (torchrun): ddp, or fsdp to shard the model; default "
                    "ddp, fsdp for --preset paper when several processes are launched")
    ap.add_argument("--force", action="store_true", help="redo every stage")
    ap.add_argument("--keep-models", action="store_true", help="keep unlearned models in --work")
    ap.add_argument("--attacks", action="store_true", help="also run the relearning and int4 "
                    "attacks (llm/studies/attacks.py) on each main-grid run's final model and its "
                    "best-Forget-Quality epoch's (keeps both models; not with --strategy fsdp); "
                    "writes <out>/attacks/<task>_attacks.json")
    ap.add_argument("--hp", dest="hparams", action=HparamAction, default={}, metavar="NAME=VALUE",
                    help="a hyper-parameter of the selected methods outside the paper's grid "
                         "(repeatable), e.g. --methods RMU --hp layer=1 on a 3-layer model")
    ap.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from llm.data.tofu import DataError
    from llm.evaluate.summary import EvalError
    from llm.models import ModelError
    from llm.train.loop import ConfigError
    return run(PROG, _main, args, user_errors=(PipelineError, DataError, EvalError, ModelError,
                                               ConfigError))


def _main(args) -> int:
    o = build_options(args)
    if args.dry_run:
        runs = plan_runs(o.preset, o.extras)
        print(json.dumps([dataclasses.asdict(r) | {"id": r.id} for r in runs]) if args.json
              else "\n".join(r.id for r in runs))
        return 0
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    rank0 = main_rank()   # under torchrun only rank 0 logs and prints
    if not rank0:
        log = lambda *a, **k: None  # noqa: E731
    start = time.perf_counter()
    from llm.train import distributed
    from llm.models import check_device
    check_device(o.device)   # one line for --device cuda without a GPU, before joining a process group
    group = distributed.setup(o.device, group=o.strategy == "fsdp", timeout_s=6 * 3600)
    try:
        manifest = run_pipeline(o, log=log)
        distributed.barrier(group)   # rank 0 still writes the logs: no rank leaves the group before
    finally:
        distributed.teardown(group)
    if not rank0:
        return 0
    if args.json:
        print(json.dumps(manifest, sort_keys=True))
    else:
        print(f"wrote {len(manifest['runs'])} run logs to {o.out} in {time.perf_counter() - start:.0f} s; "
              f"figures: python -m figures.fig5_tofu_tradeoff --from-results {o.out} (and the other "
              f"TOFU figure modules); claims: python -m llm claims --from-results {o.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
