"""The least time any exact evaluation of the TOFU items can take on this machine: a lower bound.

    python benchmarks/bench_eval_floor.py --model tiny-target --forget forget10
    python benchmarks/bench_eval_floor.py --model SMOL_DIR --template chat --forget forget01 \\
        --ds-size 8 --compare-json bench_smol.json        # bench_eval.py --compare --json output

An evaluation must (1) score every eval sequence teacher-forced and (2) generate each prompt's
greedy answer. Whatever the code, that needs at least:

* scoring: one pass of the transformer blocks over every *distinct* token prefix of the scored
  sequences (positions are counted in a trie, so a shared question or a shared start of two answers
  counts once: more sharing than llm/evaluate/forward.py exploits) and the output head at every
  distinct position that predicts an answer token: 2 flop per parameter per position, at the
  machine's own GEMM peak (``bench_cpu_train.gemm_peak``);
* generation: the prompts' prefill (a trie again) and, for every new token, one pass over the
  weights; decoding is sequential, so step s of the answers (all rows still going, in one batch)
  takes at least max(its flops / peak, the weights' bytes / memory bandwidth): every step reads
  every weight once. The bandwidth term is counted only when the weights do not fit in the
  last-level cache (``getconf LEVEL3_CACHE_SIZE``). The answers' lengths are the model's own
  (greedy, measured by running the generation once).

Attention, norms, softmax, the embedding lookup and Python are all left out, so the real time is
always above the bound. Reported for fp32 (the exact evaluation) and bf16 weights. With
``--compare-json`` (``bench_eval.py --compare --json``) it also reports the base's and the current
code's measured seconds and the largest speedup over the base that any implementation reaching the
floor could show: a speedup target above it cannot be met on this machine at that precision.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_train import gemm_peak  # noqa: E402


def bandwidth_gbs(gib: float = 1.0, repeats: int = 5) -> float:
    """Memory read bandwidth, GB/s: the median time to sum a ``gib`` GiB float32 tensor."""
    x = torch.ones(int(gib * (1 << 30) // 4))
    x.sum()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / statistics.median(times) / 1e9


def llc_bytes() -> int:
    """The last-level cache's size in bytes (0 if unknown, which counts the bandwidth term)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"), reverse=True):
        size = (index / "size").read_text().strip() if (index / "size").exists() else ""
        if size:
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
            return int(size.rstrip("KMG")) * scale
    return 0


def trie_positions(sequences: list[list[int]], scored: list[list[bool]] | None = None) -> tuple[int, int]:
    """(distinct prefixes, distinct prefixes whose next token is scored) over ``sequences``: the
    positions a prefix-sharing forward must compute, and those that need the output head."""
    seen: dict[tuple, bool] = {}
    for i, ids in enumerate(sequences):
        for j in range(len(ids)):
            key = tuple(ids[:j + 1])
            head = bool(scored and j + 1 < len(ids) and scored[i][j + 1])
            seen[key] = seen.get(key, False) or head
    return len(seen), sum(seen.values())


def param_counts(model) -> tuple[int, int, int]:
    """(transformer-block parameters, output-head parameters, total bytes-relevant parameters)."""
    head = model.get_output_embeddings().weight
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    tied = head.data_ptr() == emb.data_ptr()
    blocks = total - emb.numel() - (0 if tied else head.numel())
    return blocks, head.numel(), blocks + head.numel()


def floor(args) -> dict:
    from llm.data.formatting import IGNORE_INDEX
    from llm.evaluate import scoring
    from llm.evaluate.generation import greedy_generate
    from llm.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(args.model, device="cpu", data_dir=args.data_dir)
    model.eval()
    plan = scoring.EvalItems(tok, args.forget, args.data_dir, args.template, args.ds_size)
    blocks, head, weights = param_counts(model)
    seqs = [e["input_ids"] for e in plan.encoded]
    scored = [[lab != IGNORE_INDEX for lab in e["labels"]] for e in plan.encoded]
    score_pos, score_head = trie_positions(seqs, scored)
    score_flop = 2 * (blocks * score_pos + head * score_head)

    t = time.perf_counter()
    answers = greedy_generate(model, tok, plan.prompts, args.batch_size, args.max_new_tokens)
    gen_seconds = time.perf_counter() - t
    # new tokens per prompt, its stop token included (the step that emits it is computed too)
    lengths = [min(args.max_new_tokens, len(tok(a, add_special_tokens=False)["input_ids"]) + 1) for a in answers]
    prefill_pos, _ = trie_positions(plan.prompts)
    prefill_flop = 2 * (blocks * prefill_pos + head * len(plan.prompts))
    alive = [sum(n > s for n in lengths) for s in range(1, max(lengths))]  # rows at decode step s

    peak = {"fp32": gemm_peak(args.gemm, torch.float32, args.repeats),
            "bf16": gemm_peak(args.gemm, torch.bfloat16, args.repeats)}
    bw = bandwidth_gbs(args.bandwidth_gib)
    out = {"model": args.model, "forget": args.forget, "ds_size": args.ds_size, "items": len(plan.prompts),
           "sequences": len(seqs), "tokens_scored_naively": sum(map(len, seqs)),
           "trie_positions": score_pos, "head_positions": score_head,
           "params_blocks": blocks, "params_head": head, "new_tokens": sum(lengths),
           "longest_answer": max(lengths), "generation_measured_s": gen_seconds,
           "gemm_peak_gflops": peak, "bandwidth_gbs": bw, "llc_bytes": llc_bytes(),
           "threads": torch.get_num_threads(), "floor": {}}
    for prec, nbytes in (("fp32", 4), ("bf16", 2)):
        rate = peak[prec] * 1e9
        weight_s = weights * nbytes / (bw * 1e9) if weights * nbytes > out["llc_bytes"] else 0.0
        decode = sum(max(2 * (blocks + head) * rows / rate, weight_s) for rows in alive)
        first = max(prefill_flop / rate, weight_s)
        f = {"scoring_s": score_flop / rate, "generation_s": first + decode, "weight_read_s": weight_s}
        f["total_s"] = f["scoring_s"] + f["generation_s"]
        out["floor"][prec] = f
    if args.compare_json:
        measured = json.loads(Path(args.compare_json).read_text())
        m = next(iter(measured.values())) if "base_median_s" not in measured else measured
        out["measured"] = {"base_s": m["base_median_s"], "current_s": m["current_median_s"]}
        out["max_speedup_over_base"] = {p: m["base_median_s"] / f["total_s"] for p, f in out["floor"].items()}
        out["current_over_floor"] = {p: m["current_median_s"] / f["total_s"] for p, f in out["floor"].items()}
    return out


def report(r: dict) -> str:
    lines = [f"{r['model']} {r['forget']} ds_size={r['ds_size']}: {r['items']} prompts, {r['sequences']} "
             f"sequences ({r['tokens_scored_naively']} tokens; {r['trie_positions']} distinct prefixes, "
             f"{r['head_positions']} need the head), {r['new_tokens']} new tokens (longest {r['longest_answer']})",
             f"GEMM peak fp32 {r['gemm_peak_gflops']['fp32']:.0f}, bf16 {r['gemm_peak_gflops']['bf16']:.0f} GFLOP/s; "
             f"memory read {r['bandwidth_gbs']:.1f} GB/s; LLC {r['llc_bytes'] / 2**20:.0f} MiB; "
             f"{r['threads']} threads"]
    for p, f in r["floor"].items():
        line = (f"floor {p}: scoring {f['scoring_s']:.2f} s + generation {f['generation_s']:.2f} s "
                f"(weights read {f['weight_read_s'] * 1e3:.1f} ms a step) = {f['total_s']:.2f} s")
        if "measured" in r:
            line += (f"; base {r['measured']['base_s']:.1f} s -> at most {r['max_speedup_over_base'][p]:.1f}x; "
                     f"current {r['measured']['current_s']:.1f} s = {r['current_over_floor'][p]:.1f}x the floor")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="preset name or checkpoint folder")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default: $TOFU_DATA_DIR)")
    p.add_argument("--forget", default="forget01")
    p.add_argument("--template", default="llama2")
    p.add_argument("--ds-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--gemm", type=int, default=2048, help="GEMM size for the peak")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="size of the tensor read for the bandwidth")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--compare-json", default=None, help="bench_eval.py --compare --json output")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        r = floor(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if args.json else report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
