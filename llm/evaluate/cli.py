"""TOFU evaluation: Forget Quality and Model Utility, logs compatible with open-unlearning and legacy TOFU.

    python -m llm eval --model runs/npo --forget forget10 --retain-logs runs/retain90/TOFU_EVAL.json --out runs/npo/eval
        -> writes DIR/TOFU_EVAL.json (per item) and DIR/TOFU_SUMMARY.json, prints the summary
    python -m llm eval --from-logs LOG [--retain-logs LOG] [--ds-size 300] [--numerics ou]
        -> recomputes the summary from a per-item log (ours, open-unlearning's TOFU_EVAL.json, or
           legacy TOFU's eval_log_aggregated.json / folder of eval_*.json) and prints it as JSON
    --metrics paper|ou|all   what is computed (ou adds privleak and extraction strength, all also
                             the four MIA AUCs and ROUGE on paraphrased / perturbed answers)
    --numerics exact|ou      exact values, or open-unlearning's float32 and 1e-10 guards
                             (docs/eval-parity.md: they differ on collapsed models)
    --quantize int8|int4     the quantization attack (llm/evaluate/quantize.py): evaluate, round every
                             linear weight to its group-wise absmax grid (--group-size), evaluate
                             again; the written log is the quantized model's, its summary holds
                             the unquantized numbers under "unquantized" and the "quantization" stats

This module is the command line only. The Python API lives in three modules, lowest first:
  llm/evaluate/summary.py  per-item records -> summary (tasks, Model Utility, Forget Quality);
                       summary keys documented there
  llm/evaluate/logs.py     TOFU_EVAL.json layouts (ours = open-unlearning's, legacy TOFU's): read,
                       write, ``summarize`` a log without a model
  llm/evaluate/scoring.py       ``evaluate_model`` (scores a model), ``make_eval_fn`` (the trainer's
                       every-k-steps callback), ``EvalItems``, ``answer_losses``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.cli import check_output_dir, parser, run
from llm.evaluate import mia
from llm.evaluate.logs import EVAL_FILE, SUMMARY_FILE, disagreements, load_eval_log, summarize, write_eval
from llm.evaluate.summary import METRIC_SETS, UTILITY_KEYS, EvalError
from llm.evaluate.metrics import NUMERICS
from llm.evaluate.scoring import check_args, check_data, check_flags, check_retain, evaluate_model

FROM_LOGS_RULE = ("recompute the summary from a per-item log (no model) and print JSON. Rule: every "
                  "aggregate is recomputed from the log's per-item values (answer losses, ROUGE, "
                  "per-item MIA scores) under --numerics; its stored aggregates and truth-ratio "
                  "scores are only checked, and each disagreement is printed on stderr")

__all__ = ["main"]


# ---- command line -----------------------------------------------------------------------------

PROG = "python -m llm eval"


def _parser() -> argparse.ArgumentParser:
    p = parser(PROG, __doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model to evaluate: checkpoint folder, preset name, smol "
                     "(SmolLM2-135M-Instruct), a .gguf file or hub id")
    src.add_argument("--from-logs", metavar="LOG", help=FROM_LOGS_RULE)
    p.add_argument("--forget", default="forget10", help="forget split: forget01, forget05, forget10")
    p.add_argument("--retain-logs", metavar="LOG", help="retain model's per-item log "
                   "(TOFU_EVAL.json, legacy eval_log_aggregated.json) for Forget Quality")
    p.add_argument("--out", metavar="DIR", help="write TOFU_EVAL.json and TOFU_SUMMARY.json here")
    p.add_argument("--data-dir", help="TOFU data folder; None means $TOFU_DATA_DIR")
    p.add_argument("--template", default=None, choices=["llama2", "qa", "chat"],
                   help="prompt template (tofu-notes 2); default: chat for smol and .gguf files, a "
                   "checkpoint's training template, else llama2")
    p.add_argument("--ds-size", type=int, help="first N items of each eval set (300 = legacy TOFU; "
                   "None = all, as open-unlearning)")
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="scoring: rows x padded length per forward")
    p.add_argument("--max-new-tokens", type=int, default=200, help="greedy generation length cap")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1; None = cuda if available "
                   "(bf16 on GPU, fp32 on CPU)")
    p.add_argument("--metrics", default="paper", metavar="{" + ",".join(METRIC_SETS) + "}",
                   help="paper: the paper's metrics; ou: + privleak, extraction_strength "
                   "(open-unlearning's default suite; needs holdoutXX); all: + mia_auc {loss, zlib, "
                   "min_k, min_k_plus_plus} and ROUGE-L recall/F1 on paraphrased and perturbed answers")
    p.add_argument("--numerics", default="exact", metavar="{" + ",".join(NUMERICS) + "}",
                   help="exact: float64, log space; ou: open-unlearning's float32 probabilities and "
                   "1e-10 guards (use it to put numbers in an open-unlearning table)")
    p.add_argument("--mia-k", type=float, default=mia.DEFAULT_K,
                   help="fraction of lowest-probability tokens for Min-K%% and Min-K%%++, in (0, 1]")
    p.add_argument("--bf16-scoring", action="store_true",
                   help="teacher-forced scoring under bf16 autocast (head and log-softmax float32; "
                   "generation unchanged): faster on CPUs with AVX-512 BF16, answer losses within "
                   "~0.5 %%, summaries within ~1e-3 (docs/results.md)")
    p.add_argument("--quantize", default=None, metavar="{int8,int4}",
                   help="also evaluate after round-to-nearest group-wise weight quantization")
    p.add_argument("--group-size", type=int, default=128, help="--quantize: weights per scale")
    return p


def _print_table(summary: dict) -> None:
    keys = ["model_utility", "forget_quality", "forget_truth_ratio", "forget_Q_A_Prob",
            "forget_Q_A_ROUGE", *UTILITY_KEYS]
    for k in keys:
        v = summary.get(k)
        print(f"{k:<24} {'n/a (no --retain-logs)' if v is None else format(v, '.4g')}")
    for k in ("privleak", "extraction_strength"):
        if k in summary:
            v = summary[k]
            print(f"{k:<24} {'n/a (retain AUC 1)' if v is None else format(v, '.4g')}")
    if "privleak_reference" in summary:
        ref = "retain log" if summary["privleak_reference"] == "retain_log" else "default, no --retain-logs"
        print(f"{'privleak_reference_auc':<24} {summary['privleak_reference_auc']:.4g} ({ref})")
    for attack, v in (summary.get("mia_auc") or {}).items():
        print(f"{'mia_auc.' + attack:<24} {v:.4g}")
    for k in sorted(k for k in summary if "PARA_ROUGE" in k or "PERT_ROUGE" in k):
        print(f"{k:<24} {summary[k]:.4g}")
    print(f"{'numerics':<24} {summary['numerics']}")


def _print_quantized(summary: dict) -> None:
    q, before = summary["quantization"], summary["unquantized"]
    print(f"quantized {q['scheme']} (group {q['group_size']}): {q['layers']} linear layers, "
          f"relative weight change {q['rel_change']:.3g}; unquantized numbers:")
    for k in ("model_utility", "forget_quality", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE"):
        v = before.get(k)
        print(f"  {k:<22} {'n/a' if v is None else format(v, '.4g')}")


FQ_HINT = ("note: forget_quality is null without a retain model's log; pass --retain-logs "
           "RETAIN/TOFU_EVAL.json, made by `python -m llm finetune --split retainNN --out RETAIN` then "
           "`python -m llm eval --model RETAIN --forget forgetNN --out RETAIN` (the pipeline, "
           "`python -m llm pipeline`, makes and uses one for you)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from llm.data.tofu import DataError
    from llm.models import ModelError
    from llm.evaluate.quantize import QuantizeError
    return run(PROG, _main, args, user_errors=(EvalError, DataError, ModelError, QuantizeError))


def _main(args) -> int:
    if args.from_logs:
        check_flags(args.metrics, args.numerics, args.mia_k)
        log = load_eval_log(args.from_logs)
        try:
            summary = summarize(log, args.retain_logs, args.ds_size, args.numerics, args.metrics)
        except EvalError as e:
            about_retain = args.retain_logs and str(e).startswith((str(args.retain_logs), "retain log"))
            raise EvalError(str(e) if about_retain else f"{args.from_logs}: {e}") from None
        if args.ds_size is None:  # stored aggregates cover every item
            for line in disagreements(log, summary):
                print(f"note: {args.from_logs}: {line} (numerics {args.numerics})", file=sys.stderr)
        print(json.dumps(summary, indent=2, sort_keys=True))
        if summary.get("forget_quality") is None:
            print(FQ_HINT, file=sys.stderr)
        return 0
    check_args(args.forget, args.ds_size, args.batch_size, args.max_new_tokens, args.metrics,
               args.numerics, args.mia_k)
    if args.out:  # before minutes of scoring, not after
        try:
            check_output_dir(args.out, "--out")
        except ValueError as e:
            raise EvalError(str(e)) from None
    check_data(args.forget, args.data_dir, args.metrics)  # fail before loading a model
    check_retain(args.retain_logs, args.forget, args.ds_size, args.metrics, args.mia_k)
    if args.quantize:
        from llm.evaluate.quantize import check_scheme
        check_scheme(args.quantize, args.group_size)
    import torch

    from llm.models import default_template, load_model_and_tokenizer
    args.template = args.template or default_template(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model_and_tokenizer(args.model, device=device, data_dir=args.data_dir)
    def evaluate():
        return evaluate_model(model, tok, args.forget, args.data_dir, args.template,
                              args.retain_logs, args.ds_size, args.batch_size,
                              args.max_new_tokens, args.max_batch_tokens, args.metrics,
                              args.numerics, args.mia_k, args.bf16_scoring)

    result = evaluate()
    if args.quantize:  # the loaded model is our own copy: quantize it in place
        from llm.evaluate.quantize import quantize_model
        before = result["summary"]
        stats = quantize_model(model, args.quantize, args.group_size)
        result = evaluate()
        result["summary"].update(unquantized=before, quantization=stats)
        result["per_item"]["eval_info"]["quantization"] = stats
    result["per_item"]["eval_info"]["model"] = str(args.model)
    if args.out:
        write_eval(args.out, result)
    if args.json:
        print(json.dumps(result["summary"], indent=2, sort_keys=True))
    else:
        _print_table(result["summary"])
        if args.quantize:
            _print_quantized(result["summary"])
        if args.out:
            print(f"wrote {Path(args.out) / EVAL_FILE} and {Path(args.out) / SUMMARY_FILE}")
    if result["summary"].get("forget_quality") is None:
        print(FQ_HINT, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
