"""Throughput of the TOFU evaluation (llm/evaluate/scoring.py): items per second, batched vs one at a time.

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

``--compare BASE`` times the whole ``evaluate_model`` call of another checkout's code (e.g. ``git
worktree add /tmp/base cbb72e6``) against this checkout's, at the same settings, each in its own
subprocess with PYTHONPATH at its checkout, interleaved (base, current, base, ...) for --repeats
rounds; it reports the medians of wall and CPU seconds (a busy machine's wall times mostly measure
its scheduler), items/s, the ratios current / base, the 1-minute load average
around each round, and the largest difference between the two summaries (the same metrics to
float tolerance). Both load the same model folder (a GGUF dequantised once and saved), so loading
is not timed. ``--smol DIR`` adds a second comparison on that folder (``--smol-template``,
``--smol-ds-size``).

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



def _scoring():
    """The scoring module of whichever ``llm`` PYTHONPATH puts first: ``llm.evaluate.scoring``, or
    ``llm.scoring`` in a checkout from before the llm/ relayout (a ``--compare`` base such as
    cbb72e6, the code issue 20 measured), so that the worker runs in both."""
    try:
        from llm.evaluate import scoring
    except ImportError:
        from llm import scoring
    return scoring


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
    from llm.evaluate.generation import greedy_generate
    scoring = _scoring()
    plan = scoring.EvalItems(tok, args.forget, args.data_dir, args.template, args.ds_size)
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
    sub = scoring.EvalItems(tok, args.forget, args.data_dir, args.template, args.baseline_items)
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


def worker(args) -> dict:
    """One evaluation by whichever ``llm`` PYTHONPATH puts first: seconds and the summary."""
    from llm.models import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(args.model, device=args.device, data_dir=args.data_dir)
    scoring = _scoring()
    t, cpu = time.perf_counter(), time.process_time()
    result = scoring.evaluate_model(model, tok, args.forget, args.data_dir, args.template, None,
                                    args.ds_size, args.batch_size, args.max_new_tokens,
                                    args.max_batch_tokens, args.metrics,
                                    **({"bf16_scoring": True} if args.bf16_scoring else {}))
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    n_items = sum(result["per_item"]["eval_info"]["n_items"].values()) \
        if "n_items" in result["per_item"].get("eval_info", {}) else None
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "items": n_items, "summary": result["summary"], "llm": scoring.__file__}


def _max_diff(a, b, path="") -> tuple[float, str]:
    """Largest |a - b| over the numbers both nested summaries hold, and where. Keys only one side
    has, or that are None on one side only (definitions changed since the base, e.g. privleak
    without a retain log), are left to ``_not_compared``."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = (0.0, "")
        for k in set(a) & set(b):
            found = max(found, _max_diff(a[k], b[k], f"{path}{k}."))
        return found
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)), path.rstrip(".")
    if a is None or b is None:
        return 0.0, ""
    return (0.0, "") if a == b else (float("inf"), path.rstrip("."))


def _not_compared(a: dict, b: dict) -> list[str]:
    """Summary keys present in one only, or None in exactly one."""
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or (a[k] is None) != (b[k] is None))


def _load() -> float:
    return __import__("os").getloadavg()[0]


def compare(args, model: str, template: str, ds_size) -> dict:
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model,
            "--template", template, "--forget", args.forget, "--metrics", args.metrics,
            "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
            "--max-batch-tokens", str(args.max_batch_tokens), "--device", args.device,
            "--threads", str(args.threads), "--json"]
    if ds_size:
        argv += ["--ds-size", str(ds_size)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    arms = [("base", args.compare, []), ("current", here, [])]
    if args.bf16_scoring:  # a third arm: this checkout with --bf16-scoring
        arms.append(("current_bf16", here, ["--bf16-scoring"]))
    runs = {name: [] for name, _, _ in arms}
    loads = []
    for _ in range(args.repeats):
        for name, root, extra in arms:
            env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": str(args.threads or "")}
            if not args.threads:
                env.pop("OMP_NUM_THREADS")
            loads.append(_load())
            proc = subprocess.run(argv + extra, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ValueError(f"the {name} worker failed: {proc.stderr.strip().splitlines()[-1:]}")
            runs[name].append(json.loads(proc.stdout))
    loads.append(_load())
    t = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    # CPU seconds of the worker process: on a busy machine its wall time mostly measures the
    # scheduler (a niced single-thread worker gets a varying share of a core); CPU time does not
    cpu = {name: statistics.median(r["cpu_seconds"] for r in rs) for name, rs in runs.items()}
    items = runs["current"][0]["items"]
    diff, where = _max_diff(runs["base"][0]["summary"], runs["current"][0]["summary"])
    bf16 = {}
    if "current_bf16" in runs:
        b = runs["current_bf16"]
        bf16 = {"current_bf16_s": [r["seconds"] for r in b], "current_bf16_median_s": t["current_bf16"],
                "current_bf16_items_per_s": items / t["current_bf16"],
                "time_ratio_current_bf16_over_base": t["current_bf16"] / t["base"],
                "speedup_bf16": t["base"] / t["current_bf16"],
                "cpu_ratio_current_bf16_over_base": cpu["current_bf16"] / cpu["base"],
                "bf16_summary_max_abs_diff_vs_current": _max_diff(runs["current"][0]["summary"], b[0]["summary"])}
    return {**bf16, "model": model, "template": template, "forget": args.forget, "ds_size": ds_size,
            "metrics": args.metrics, "items": items, "repeats": args.repeats,
            "base_llm": runs["base"][0]["llm"], "current_llm": runs["current"][0]["llm"],
            "base_s": [r["seconds"] for r in runs["base"]],
            "current_s": [r["seconds"] for r in runs["current"]],
            "base_median_s": t["base"], "current_median_s": t["current"],
            "base_items_per_s": items / t["base"], "current_items_per_s": items / t["current"],
            "time_ratio_current_over_base": t["current"] / t["base"],
            "speedup": t["base"] / t["current"],
            "base_cpu_s": [r["cpu_seconds"] for r in runs["base"]],
            "current_cpu_s": [r["cpu_seconds"] for r in runs["current"]],
            "cpu_ratio_current_over_base": cpu["current"] / cpu["base"],
            "cpu_items_per_s": {name: items / c for name, c in cpu.items()},
            "summary_max_abs_diff": diff, "summary_max_diff_at": where,
            "summary_not_compared": _not_compared(runs["base"][0]["summary"], runs["current"][0]["summary"]),
            "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
            "threads": args.threads}


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
    p.add_argument("--metrics", default="paper", help="metric set (paper, ou, all); --compare only")
    p.add_argument("--compare", metavar="BASE", default=None,
                   help="another checkout's root: time its evaluate_model against this checkout's")
    p.add_argument("--smol", metavar="DIR", default=None,
                   help="with --compare: also compare on this saved (dequantised) model folder")
    p.add_argument("--smol-template", default="chat")
    p.add_argument("--smol-ds-size", type=int, default=8)
    p.add_argument("--bf16-scoring", action="store_true",
                   help="--compare: a third arm, this checkout with --bf16-scoring")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.worker:
            result = worker(args)
        elif args.compare:
            result = {"tiny": compare(args, args.model, args.template, args.ds_size)}
            if args.smol:
                result["smol"] = compare(args, args.smol, args.smol_template, args.smol_ds_size)
        else:
            result = run(args)
    except ValueError as e:  # EvalError, DataError and ModelError are ValueErrors
        print(f"error: {e}", file=__import__("sys").stderr)
        return 2
    if args.json or args.compare:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:<38} {v:.4g}" if isinstance(v, float) else f"{k:<38} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
