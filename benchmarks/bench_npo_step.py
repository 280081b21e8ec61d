"""NPO's optimizer step against GA's on the same model and batch: time and peak memory.

    python benchmarks/bench_npo_step.py [--model small] [--batch-size 8] [--steps 10] [--repeats 3]
    python benchmarks/bench_npo_step.py --device cuda --model gpu --batch-size 32   # on a GPU

Variants (each in its own process, so peak memory is its own; repeats interleaved A B C A B C so
machine load hits all alike):
* ga          forget batch only, token-mean NLL ascended (the paper's GA);
* npo-cached  NPO with reference log-probs from llm/train/refcache (no second model);
* npo-live    NPO with a frozen reference copy run on every batch (open-unlearning's way).
A step = forward + backward + AdamW update of one micro-batch of ``--batch-size`` forget QA pairs
(TOFU forget10, template llama2). Reported: median ms/step over repeats, peak memory (CUDA:
torch.cuda.max_memory_allocated; CPU: peak RSS growth over the process's RSS before the model is
built, from getrusage/proc), and ratios to GA. The one-off cost of filling the cache is reported
separately (it is one forward pass over the forget set, paid once per model and data).
Writes results/bench_npo_step.json (atomically) and prints a table; --json prints the document.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"ga": ("ga", "cached"), "npo-cached": ("npo", "cached"), "npo-live": ("npo", "live")}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(args, variant: str):
    """(run, one-step closure) for a variant; the step = zero_grad, forward, backward, AdamW."""
    import torch
    from llm.train.model_setup import prepare_model
    from llm.train.loop import TrainConfig, micro_losses
    from llm.train.unlearning import prepare_run
    method, reference = VARIANTS[variant]
    cfg = TrainConfig(model=args.model, data_dir=args.data_dir, forget=args.forget, method=method,
                      reference=reference, batch_size=args.batch_size, effective_batch=args.batch_size,
                      epochs=1, ref_cache=args.ref_cache, device=args.device, seed=0,
                      gradient_checkpointing=args.gradient_checkpointing)
    run = prepare_run(cfg, "unlearn")
    model = prepare_model(run)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(i: int) -> None:
        items = run.plan.items(i % run.plan.steps, 0, 1, args.batch_size, 1)[0]
        optimizer.zero_grad(set_to_none=True)
        micro_losses(run, model, items)["loss"].backward()
        optimizer.step()
    return run, step


def _sync(args):
    import torch
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_memory(args) -> dict:
    """Child process, one variant: peak memory of building it and taking warmup + steps steps."""
    import torch
    import llm.train.unlearning  # noqa: F401  (imports count toward the baseline, not the variant)
    from transformers import LlamaForCausalLM  # noqa: F401
    cuda = args.device.startswith("cuda")
    baseline = _rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run, step = _build(args, args.variant)
    for i in range(args.warmup + args.steps):
        step(i)
    _sync(args)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline)
    cache_fill_s = None
    if args.variant == "npo-cached":  # the one-off cost the cache replaces: a pass over the forget set
        from llm.train.refcache import reference_logps
        t = time.perf_counter()
        reference_logps(run.model, run.train, run.tokenizer.pad_token_id, args.batch_size, run.autocast)
        _sync(args)
        cache_fill_s = time.perf_counter() - t
    return {"peak_bytes": peak, "cache_fill_s": cache_fill_s, "device": str(run.dist.device),
            "precision": run.precision, "params": sum(p.numel() for p in run.model.parameters())}


def measure_time(args) -> dict:
    """Child process, all variants side by side, steps interleaved round-robin: ms/step medians."""
    built = {v: _build(args, v)[1] for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    for i in range(args.warmup + args.steps * args.repeats):
        for v, step in built.items():
            _sync(args)
            t = time.perf_counter()
            step(i)
            _sync(args)
            if i >= args.warmup:
                times[v].append(1e3 * (time.perf_counter() - t))
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="small", help="preset, checkpoint folder or hub id")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default: $TOFU_DATA_DIR, else the hub cache)")
    p.add_argument("--forget", default="forget10")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out", default="results/bench_npo_step.json")
    p.add_argument("--json", action="store_true", help="print the result document")
    p.add_argument("--variant", choices=[*VARIANTS, "time"], help=argparse.SUPPRESS)
    p.add_argument("--ref-cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.variant:  # child process
        print(json.dumps(measure_time(args) if args.variant == "time" else measure_memory(args)))
        return 0
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           # large blocks via mmap, returned on free: peak RSS then tracks live tensors
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    with tempfile.TemporaryDirectory() as cache:
        flags = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
        flags = _strip(_strip(flags, "--out"), "--model")
        model = args.model
        from llm.models import MODEL_PRESETS
        if model in MODEL_PRESETS:  # build once (tokenizer training would blur the children's memory)
            from llm.models import load_model_and_tokenizer
            m, tok = load_model_and_tokenizer(model, data_dir=args.data_dir, seed=0)
            model = str(Path(cache) / model)
            m.save_pretrained(model)
            tok.save_pretrained(model)
        flags += ["--model", model, "--ref-cache", cache]

        def child(variant):
            done = subprocess.run([sys.executable, __file__, *flags, "--variant", variant],
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                raise RuntimeError(done.stderr[-3000:])
            return json.loads(done.stdout.strip().splitlines()[-1])

        memory = {v: child(v) for v in VARIANTS}   # npo-cached fills the cache here, once
        times = child("time")
    summary = {v: {"ms_per_step": statistics.median(times[v]),
                   "ms_per_step_min": min(times[v]),
                   "peak_mib": memory[v]["peak_bytes"] / 2 ** 20} for v in VARIANTS}
    ga = summary["ga"]
    for v in summary:
        summary[v]["time_ratio_vs_ga"] = summary[v]["ms_per_step"] / ga["ms_per_step"]
        summary[v]["memory_ratio_vs_ga"] = summary[v]["peak_mib"] / ga["peak_mib"]
    first = memory["npo-cached"]
    doc = {"model": args.model, "params": first["params"], "device": first["device"],
           "precision": first["precision"], "batch_size": args.batch_size, "forget": args.forget,
           "steps": args.steps, "repeats": args.repeats, "variants": summary,
           "cache_fill_s": first["cache_fill_s"],
           "memory_measure": "cuda max_memory_allocated" if first["device"].startswith("cuda")
           else "peak RSS growth (getrusage) over the pre-model RSS"}
    from infra.files import write_json
    write_json(args.out, doc)
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{args.model} ({first['params'] / 1e6:.1f}M params), {first['device']}, {first['precision']}, "
          f"batch {args.batch_size} of {args.forget}, median of {args.repeats} x {args.steps} interleaved steps")
    print(f"{'variant':<12} {'ms/step':>9} {'min':>7} {'x GA':>6} {'peak MiB':>9} {'x GA':>6}")
    for v, s in summary.items():
        print(f"{v:<12} {s['ms_per_step']:9.1f} {s['ms_per_step_min']:7.1f} {s['time_ratio_vs_ga']:6.3f} "
              f"{s['peak_mib']:9.1f} {s['memory_ratio_vs_ga']:6.3f}")
    print(f"filling the reference cache ({args.forget}, once): {doc['cache_fill_s']:.2f} s")
    print(f"wrote {args.out}")
    return 0


def _strip(flags, name):
    out, skip = [], False
    for a in flags:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
