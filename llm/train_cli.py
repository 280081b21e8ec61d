"""``python -m llm finetune`` and ``python -m llm unlearn``: llm/train.py's command line with the
TOFU evaluation callback of ``--eval-every`` (llm.scoring) plugged in here, so that the training
modules never import evaluation code (a metric fix must not change a fine-tune's code hash).
"""
from __future__ import annotations

from llm.config import ConfigError, TrainConfig
from llm.train import EvalFn, _main
from llm.unlearning import OBJECTIVE

__all__ = ["finetune_main", "unlearn_main"]


def _cli_eval_fn(cfg: TrainConfig) -> EvalFn:
    """llm.scoring's callback: data and retain log loaded once, before training starts."""
    from llm.eval_summary import EvalError
    from llm.scoring import make_eval_fn
    try:
        return make_eval_fn(cfg.forget, data_dir=cfg.data_dir, template=cfg.template,
                            retain_logs=cfg.retain_logs)
    except EvalError as e:
        raise ConfigError(str(e)) from None


def finetune_main(argv=None) -> int:
    return _main("finetune", argv, make_eval_fn=_cli_eval_fn)


def unlearn_main(argv=None) -> int:
    return _main("unlearn", argv, OBJECTIVE, make_eval_fn=_cli_eval_fn)


if __name__ == "__main__":
    raise SystemExit(unlearn_main())
