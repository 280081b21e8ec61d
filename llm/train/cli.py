"""``python -m llm finetune`` and ``python -m llm unlearn``: llm/train/loop.py's loop behind a command
line, with the TOFU evaluation callback of ``--eval-every`` (llm.evaluate.scoring) plugged in here, so that
the training modules never import evaluation code (a metric fix must not change a fine-tune's
code hash). Exit 2 with one line for an error the user can fix, 1 when training stopped.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llm.train import checkpoints, loop as train
from llm.train.config import ConfigError, TrainConfig, parser, resolve
from llm.train.loop import EvalFn, Objective
from llm.train.unlearning import OBJECTIVE

__all__ = ["finetune_main", "unlearn_main"]


def _cli_eval_fn(cfg: TrainConfig) -> EvalFn:
    """llm.evaluate.scoring's callback: data and retain log loaded once, before training starts."""
    from llm.evaluate.summary import EvalError
    from llm.evaluate.scoring import make_eval_fn
    try:
        return make_eval_fn(cfg.forget, data_dir=cfg.data_dir, template=cfg.template,
                            retain_logs=cfg.retain_logs)
    except EvalError as e:
        raise ConfigError(str(e)) from None


def finetune_main(argv=None) -> int:
    return _main("finetune", argv, make_eval_fn=_cli_eval_fn)


def unlearn_main(argv=None) -> int:
    return _main("unlearn", argv, OBJECTIVE, make_eval_fn=_cli_eval_fn)


def _main(mode: str, argv, objective: Objective | None = None, make_eval_fn=None) -> int:
    """``python -m llm finetune|unlearn``; ``make_eval_fn(cfg)`` builds ``--eval-every``'s callback."""
    args = vars(parser(mode, objective.methods if objective else ()).parse_args(argv))
    as_json = args.pop("json")
    cfg = TrainConfig(**args)
    try:
        eval_fn = make_eval_fn(cfg) if cfg.eval_every and make_eval_fn else None
        out = train._train(cfg, mode, eval_fn, objective)
    except train.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except train.TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the folder is as a kill leaves it: resumable or overwritable
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"python -m llm {mode}: stopped: {_interrupted(cfg, mode)}", file=sys.stderr)
        return 130
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").exists() else []
    steps = [r for r in rows if "loss" in r]
    result = {"out": str(out), "steps": len(steps), "first": steps[0] if steps else None,
              "last": steps[-1] if steps else None}
    if out.name.endswith(".partial") and not as_json:
        print(f"stopped after {len(steps)} steps; continue with --resume (state in {out})")
    elif int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result) if as_json else f"wrote {out} ({len(steps)} steps, final loss "
              f"{steps[-1]['loss']:.4f})" if steps else f"wrote {out}")
    return 0


def _interrupted(cfg: TrainConfig, mode: str) -> str:
    try:
        work = checkpoints.work_dir(Path(resolve(cfg, mode, 1).out))
    except ConfigError:
        work = None
    if work is None or not work.exists():
        return "interrupted before training started; nothing was written"
    return f"interrupted: {work} keeps the run: {checkpoints.status(work)}"


if __name__ == "__main__":
    raise SystemExit(unlearn_main())
