"""The TOFU GPU run: the ``gpu`` pipeline preset on forget10, with throughput numbers.

    bash benchmarks/gpu_tofu.sh                    # one H100/H200, < 10 min; logs to $OUT or results/tofu_gpu
    bash benchmarks/gpu_tofu.sh --quick            # the same on CPU, micro-sized (about a minute)
    python benchmarks/gpu_tofu.py --help

Runs ``python -m llm pipeline --preset gpu --tasks forget10 --methods GA GA+RT NPO NPO+RT`` (a
~34M-parameter Llama trained from scratch on all of TOFU, then unlearned, evaluated every epoch),
then prints, from the stage timings the pipeline records:
* fine-tuning tokens/s (real, unpadded tokens; training time only) and MFU = tokens/s x training
  FLOPs per token / peak (bf16 dense: 989 TFLOP/s on H100 and H200; pass --peak-tflops otherwise);
* the NPO/GA and NPO+RT/GA+RT step-time ratios and each run's peak training memory, NPO using the
  cached reference log-probs (llm/train/refcache.py: no second model in memory);
* evaluation items/s (forget + retain + real-author + world-fact items per second of evaluation);
* the fsdp leg (skip with --no-fsdp): NPO+RT from the pipeline's target on forget10, one process
  plain (ddp) and one process under FSDP2 (torchrun --nproc-per-node 1, --strategy fsdp): peak
  memory (torch.cuda.max_memory_allocated), step time, and ``python -m llm plan``'s estimate of
  each (benchmarks/bench_plan.py). --quick runs it on CPU with the quick target.
Writes the result logs (``--out``, default ``$OUT/tofu_gpu`` on the device machine, else
``results/tofu_gpu``), ``gpu_tofu_summary.json`` beside them and, when --archive is given, one
``tofu_gpu.tar.gz`` of the logs (the device machine returns at most 8 files).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}   # dense bf16, SXM
METHODS = ["GA", "GA+RT", "NPO", "NPO+RT"]
QUICK = ["--preset", "cpu", "--tasks", "forget05", "--qa-per-author", "1", "--ft-epochs", "2",
         "--unlearn-epochs", "2", "--ds-size", "6"]
FULL = ["--preset", "gpu", "--tasks", "forget10"]


def pipeline_args(args) -> list[str]:
    argv = (QUICK if args.quick else FULL) + ["--methods", *args.methods, "--no-extras",
                                              "--out", str(args.out), "--work", str(args.work)]
    if args.data_dir:
        argv += ["--data-dir", str(args.data_dir)]
    if args.device:
        argv += ["--device", args.device]
    return argv + list(args.extra)


def peak_flops(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in device:
            return tflops * 1e12
    return None


def summarize(manifest: dict, runs: dict[str, dict], peak: float | None) -> dict:
    """The printed numbers, from the manifest's target fine-tune and the run logs' meta rows."""
    ft = manifest["target"]
    out = {"device": manifest["device"], "versions": manifest["versions"],
           "model_params": ft.get("n_params"), "finetune_tokens_per_s": ft.get("tokens_per_s"),
           "finetune_seconds": ft.get("train_seconds"), "flops_per_token": ft.get("flops_per_token")}
    tps, fpt = ft.get("tokens_per_s"), ft.get("flops_per_token")
    out["mfu"] = tps * fpt / peak if (peak and tps and fpt) else None
    per_method = {}
    for meta in runs.values():
        step = meta["train_seconds"] / meta["train_steps"] if meta.get("train_steps") else None
        per_method[meta["method"]] = {"step_seconds": step, "peak_train_bytes": meta.get("peak_train_bytes"),
                                      "eval_items_per_s": meta.get("eval_items_per_s"),
                                      "train_steps": meta.get("train_steps")}
    out["methods"] = per_method

    def ratio(a, b):
        sa, sb = (per_method.get(m, {}).get("step_seconds") for m in (a, b))
        return sa / sb if sa and sb else None

    out["npo_over_ga_step_time"] = ratio("NPO", "GA")
    out["npo_rt_over_ga_rt_step_time"] = ratio("NPO+RT", "GA+RT")
    rates = [m["eval_items_per_s"] for m in per_method.values() if m["eval_items_per_s"]]
    out["eval_items_per_s"] = statistics.median(rates) if rates else None
    return out


def _fmt(x, unit="", scale=1.0, digits=3):
    return "n/a" if x is None else f"{x / scale:.{digits}g}{unit}"


def report(s: dict) -> str:
    lines = [f"device: {s['device']}  ({', '.join(f'{k} {v}' for k, v in s['versions'].items())})",
             f"model: {_fmt(s['model_params'], ' M params', 1e6)}",
             f"fine-tuning: {_fmt(s['finetune_tokens_per_s'], ' tokens/s', 1, 4)} over "
             f"{_fmt(s['finetune_seconds'], ' s')}, MFU (bf16) {_fmt(s['mfu'] and 100 * s['mfu'], ' %')}",
             f"step time NPO/GA {_fmt(s['npo_over_ga_step_time'])}, NPO+RT/GA+RT "
             f"{_fmt(s['npo_rt_over_ga_rt_step_time'])} (cached reference)",
             f"evaluation: {_fmt(s['eval_items_per_s'], ' items/s', 1, 4)} (median over runs)"]
    for method, m in s["methods"].items():
        lines.append(f"  {method:<7} step {_fmt(m['step_seconds'] and 1e3 * m['step_seconds'], ' ms')}  "
                     f"peak train memory {_fmt(m['peak_train_bytes'] or None, ' GiB', 2 ** 30)}  "
                     f"eval {_fmt(m['eval_items_per_s'], ' items/s', 1, 4)}")
    return "\n".join(lines)


def fsdp_leg(args) -> dict:
    """ddp vs fsdp on one device from the pipeline's target model (benchmarks/bench_plan.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_plan
    import torch
    target = max(args.work.glob("target-*/model"), key=lambda p: p.stat().st_mtime)
    device = "cpu" if args.quick else (args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch, steps = (4, 2) if args.quick else (32, 5)
    argv = ["--model", str(target), "--processes", "1", "--device", device, "--batch-size", str(batch),
            "--steps", str(steps), "--examples", str(batch * steps), "--forget",
            "forget05" if args.quick else "forget10", "--out", str(args.out.parent / "fsdp_leg.json")]
    if args.data_dir:
        argv += ["--data-dir", str(args.data_dir)]
    bench = bench_plan.parser().parse_args(argv)
    doc = bench_plan.compare(bench)
    from infra.files import write_json
    write_json(bench.out, doc)
    return doc


def fsdp_report(doc: dict | None) -> str:
    if not doc:
        return ""
    lines = [f"\nfsdp leg (NPO+RT, micro-batch {doc['batch_size']}, 1 process on {doc['device']}):"]
    for strategy, r in doc["rows"].items():
        lines.append(f"  {strategy:<5} step {1e3 * r['seconds_per_step']:.0f} ms  peak "
                     f"{r['measured_peak_bytes'] / 2 ** 30:.3f} GiB  planned {r['planned_bytes'] / 2 ** 30:.3f} "
                     f"GiB ({r['error']:+.0%})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_tofu.py", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="micro-sized cpu run (tests, CPU machines)")
    ap.add_argument("--out", type=Path, default=None,
                    help="result logs (default $OUT/tofu_gpu if $OUT is set, else results/tofu_gpu)")
    ap.add_argument("--work", type=Path, default=None, help="models and stages (default /tmp/tofu_gpu_work)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="TOFU folder (default $TOFU_DATA_DIR, else ./.tofu, else ../shared/tofu)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: auto)")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU on other cards")
    ap.add_argument("--archive", action="store_true", help="also write <out>.tar.gz of the logs")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    ap.add_argument("--no-fsdp", action="store_true", help="skip the fsdp leg")
    ap.add_argument("extra", nargs="*", help="further `python -m llm pipeline` flags (after --)")
    args = ap.parse_args(argv)
    env_out = os.environ.get("OUT")
    args.out = args.out or (Path(env_out) / "tofu_gpu" if env_out else REPO / "results" / "tofu_gpu")
    args.work = args.work or Path("/tmp/tofu_gpu_work")
    if args.data_dir is None and not os.environ.get("TOFU_DATA_DIR"):
        for candidate in (REPO / ".tofu", REPO.parent / "shared" / "tofu"):
            if (candidate / "full.json").exists():
                args.data_dir = candidate
                break
    from llm.pipeline import cli as pipeline_cli
    start = time.perf_counter()
    code = pipeline_cli.main(pipeline_args(args))
    if code:
        return code
    manifest = json.loads((args.out / "manifest.json").read_text())
    fsdp = None if args.no_fsdp else fsdp_leg(args)
    runs = {}
    for entry in manifest["runs"]:
        first = (args.out / entry["log"]).read_text().splitlines()[0]
        runs[entry["id"]] = json.loads(first)
    summary = summarize(manifest, runs, peak_flops(manifest["device"], args.peak_tflops))
    summary["fsdp_leg"] = fsdp
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    summary_path = args.out.parent / "gpu_tofu_summary.json"
    from infra.files import write_json
    write_json(summary_path, summary)
    if args.archive:
        with tarfile.open(args.out.parent / f"{args.out.name}.tar.gz", "w:gz") as tar:
            tar.add(args.out, arcname=args.out.name)
    print(json.dumps(summary, sort_keys=True) if args.json else report(summary) + fsdp_report(fsdp))
    print(f"wall time {summary['wall_seconds']} s; logs in {args.out}; summary {summary_path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
