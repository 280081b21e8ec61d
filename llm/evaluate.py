"""TOFU evaluation: Forget Quality and Model Utility, logs compatible with open-unlearning and legacy TOFU.

    python -m llm eval --model runs/npo --forget forget10 --retain-logs runs/retain90/TOFU_EVAL.json --out runs/npo/eval
        -> writes DIR/TOFU_EVAL.json (per item) and DIR/TOFU_SUMMARY.json, prints the summary
    python -m llm eval --from-logs LOG [--retain-logs LOG] [--ds-size 300]
        -> recomputes the summary from a per-item log (ours, open-unlearning's TOFU_EVAL.json, or
           legacy TOFU's eval_log_aggregated.json / folder of eval_*.json) and prints it as JSON

This module is the command line only. The Python API lives in three modules, lowest first:
  llm/eval_summary.py  per-item records -> summary (tasks, Model Utility, Forget Quality);
                       summary keys documented there
  llm/eval_logs.py     TOFU_EVAL.json layouts (ours = open-unlearning's, legacy TOFU's): read,
                       write, ``summarize`` a log without a model
  llm/scoring.py       ``evaluate_model`` (scores a model), ``make_eval_fn`` (the trainer's
                       every-k-steps callback), ``EvalPlan``, ``answer_losses``
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.cli import parser, run

from llm.eval_logs import EVAL_FILE, SUMMARY_FILE, retain_reference, summarize, write_eval
from llm.eval_summary import UTILITY_KEYS, EvalError
from llm.scoring import check_args, evaluate_model

__all__ = ["main"]


# ---- command line -----------------------------------------------------------------------------

PROG = "python -m llm eval"


def _parser() -> argparse.ArgumentParser:
    p = parser(PROG, __doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model to evaluate: checkpoint folder, preset name or hub id")
    src.add_argument("--from-logs", metavar="LOG",
                     help="recompute the summary from a per-item log (no model) and print JSON")
    p.add_argument("--forget", default="forget10", help="forget split: forget01, forget05, forget10")
    p.add_argument("--retain-logs", metavar="LOG", help="retain model's per-item log "
                   "(TOFU_EVAL.json, legacy eval_log_aggregated.json) for Forget Quality")
    p.add_argument("--out", metavar="DIR", help="write TOFU_EVAL.json and TOFU_SUMMARY.json here")
    p.add_argument("--data-dir", help="TOFU data folder; None means $TOFU_DATA_DIR")
    p.add_argument("--template", default="llama2", choices=["llama2", "qa", "chat"],
                   help="prompt template (tofu-notes 2)")
    p.add_argument("--ds-size", type=int, help="first N items of each eval set (300 = legacy TOFU; "
                   "None = all, as open-unlearning)")
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="scoring: rows x padded length per forward")
    p.add_argument("--max-new-tokens", type=int, default=200, help="greedy generation length cap")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1; None = cuda if available "
                   "(bf16 on GPU, fp32 on CPU)")
    return p


def _print_table(summary: dict) -> None:
    keys = ["model_utility", "forget_quality", "forget_truth_ratio", "forget_Q_A_Prob",
            "forget_Q_A_ROUGE", *UTILITY_KEYS]
    for k in keys:
        v = summary.get(k)
        print(f"{k:<24} {'n/a (no --retain-logs)' if v is None else format(v, '.4g')}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from llm.data import DataError
    from llm.models import ModelError
    return run(PROG, _main, args, user_errors=(EvalError, DataError, ModelError))


def _main(args) -> int:
    if args.from_logs:
        summary = summarize(args.from_logs, args.retain_logs, args.ds_size)
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    check_args(args.forget, args.ds_size, args.batch_size, args.max_new_tokens)
    retain_reference(args.retain_logs, args.forget, args.ds_size)  # fail before loading a model
    import torch

    from llm.models import load_model_and_tokenizer
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model_and_tokenizer(args.model, device=device, data_dir=args.data_dir)
    result = evaluate_model(model, tok, args.forget, args.data_dir, args.template,
                            args.retain_logs, args.ds_size, args.batch_size,
                            args.max_new_tokens, args.max_batch_tokens)
    result["per_item"]["eval_info"]["model"] = str(args.model)
    if args.out:
        write_eval(args.out, result)
    if args.json:
        print(json.dumps(result["summary"], indent=2, sort_keys=True))
    else:
        _print_table(result["summary"])
        if args.out:
            print(f"wrote {Path(args.out) / EVAL_FILE} and {Path(args.out) / SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
