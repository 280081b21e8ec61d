"""Throughput of the TOFU evaluation (llm/scoring.py): items per second, batched vs one at a time.

    python benchmarks/bench_eval.py                       # tiny preset, CPU, forget01, 200 new tokens
    python benchmarks/bench_eval.py --device cuda --model runs/target --forget forget10
    python benchmarks/bench_eval.py --ds-size 100 --threads 1 --json

Measures, as medians over --repeats runs, the two halves of an evaluation on the same items:
scoring (answer, paraphrased and perturbed answers; length-sorted dynamic-padding batches) and
greedy generation (length-sorted, left-padded batches with the KV cache), plus the whole
``evaluate_model`` call. The baseline does the same work one sequence / one prompt at a time
(the sequences of the first --baseline-items items of each task; 16 prompts), back to back with
the batched code in every repeat; the median of the per-repeat ratios (one-at-a-time time /
batched time) is reported.

An untrained preset never emits EOS, so every prompt generates --max-new-tokens tokens: the
generation numbers are a worst case (trained models stop after ~30-60 tokens). Timings on a shared
machine are noisy; compare ratios from one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from llm import eval_summary, scoring
from llm.generation import greedy_generate


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(args) -> dict:
    from llm.models import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(args.model, device=args.device, data_dir=args.data_dir)
    model.eval()
    plan = scoring.EvalPlan(tok, args.forget, args.data_dir, args.template, args.ds_size)
    n_items = sum(len(rows) for rows in plan.items.values())
    pad = tok.pad_token_id
    score = lambda enc, budget: scoring.answer_losses(model, enc, pad, budget)  # noqa: E731
    gen = lambda prompts, bs: greedy_generate(model, tok, prompts, bs, args.max_new_tokens)  # noqa: E731

    t_score = _timed(lambda: score(plan.encoded, args.max_batch_tokens), args.device, args.repeats)
    t_gen = _timed(lambda: gen(plan.prompts, args.batch_size), args.device, args.repeats)
    t_full = _timed(lambda: scoring.evaluate_model(
        model, tok, args.forget, args.data_dir, args.template, None, args.ds_size, args.batch_size,
        args.max_new_tokens, args.max_batch_tokens), args.device, args.repeats)

    # Baseline on a subset: the sequences of the first k items of each task and the first 16 of
    # their prompts, one at a time, timed back to back with the batched code in each repeat.
    sub = scoring.EvalPlan(tok, args.forget, args.data_dir, args.template, args.baseline_items)
    sub_prompts = sub.prompts[:16]
    score_ratio, gen_ratio = [], []
    for _ in range(args.repeats):
        score_ratio.append(_timed(lambda: score(sub.encoded, 1), args.device, 1)
                           / _timed(lambda: score(sub.encoded, args.max_batch_tokens), args.device, 1))
        gen_ratio.append(_timed(lambda: gen(sub_prompts, 1), args.device, 1)
                         / _timed(lambda: gen(sub_prompts, args.batch_size), args.device, 1))

    return {
        "model": args.model, "device": args.device, "dtype": str(next(model.parameters()).dtype),
        "forget": args.forget, "items": n_items, "sequences_scored": len(plan.encoded),
        "prompts": len(plan.prompts), "max_new_tokens": args.max_new_tokens,
        "scoring_items_per_s": n_items / t_score,
        "scoring_sequences_per_s": len(plan.encoded) / t_score,
        "generation_items_per_s": len(plan.prompts) / t_gen,
        "evaluate_items_per_s": n_items / t_full, "evaluate_s": t_full,
        "baseline_sequences": len(sub.encoded), "baseline_prompts": len(sub_prompts),
        "scoring_speedup_vs_one_at_a_time": statistics.median(score_ratio),
        "generation_speedup_vs_one_at_a_time": statistics.median(gen_ratio),
        "repeats": args.repeats, "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="preset name or checkpoint folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default: $TOFU_DATA_DIR)")
    p.add_argument("--forget", default="forget01")
    p.add_argument("--template", default="llama2")
    p.add_argument("--ds-size", type=int, default=None, help="first N items of each eval set")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline-items", type=int, default=25,
                   help="items per task whose sequences the one-at-a-time scoring baseline scores")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0 = torch's default); 1 gives stable timings on a shared "
                        "machine, where a busy core stalls every parallel region of a small model")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (eval_summary.EvalError, ValueError) as e:  # DataError / ModelError are ValueErrors
        print(f"error: {e}", file=__import__("sys").stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:<38} {v:.4g}" if isinstance(v, float) else f"{k:<38} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
