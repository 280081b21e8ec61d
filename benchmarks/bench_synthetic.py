"""Benchmark: regenerating Figures 3, 4 and 9 from scratch, and the per-step speed-up behind it.

    python -m benchmarks.bench_synthetic [--repeats 3] [--skip-whole] [--json]

1. whole: ``python -m figures --only fig3_beta_limit fig4_tradeoff fig9_forget_kl`` as a fresh
   process in an empty working directory (no cached fits or results), ``--repeats`` times; reports
   the median, min and max wall time, the CPU seconds of the process and its workers, and the load
   average when it started (the 2-core machine is shared, so wall times are noisy).
2. ratio: one reference-model GD step the authors' way (torch autograd, features recomputed in the
   forward pass, one model at a time) against ours (precomputed features, reference and retrained
   fits side by side, closed-form gradient), per model step in CPU time, interleaved in one
   single-threaded child process; and our unlearning step per (seed, method) (6 methods x 5 seeds). The ratio,
   not the absolute time, is the portable number.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIGURES = ["fig3_beta_limit", "fig4_tradeoff", "fig9_forget_kl"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def whole(repeats: int) -> dict:
    """Wall time of the whole process (and CPU seconds of it and its workers, which load hardly moves)."""
    times, cpu, loads = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            loads.append(os.getloadavg()[0])
            cpu0, start = _children_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "figures", "--only", *FIGURES, "--out", f"{tmp}/out"],
                           cwd=tmp, check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            times.append(time.perf_counter() - start)
            cpu.append(_children_cpu() - cpu0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs_s": times, "cpu_s": cpu, "load_avg_1min_at_start": loads}


def _authors_fit_step(x, y_onehot, w, n_steps):
    """The authors' RFModel.pretrained_model loop body (synthetic/mymodel.py), n_steps times."""
    import torch
    import torch.nn.functional as F
    v = torch.zeros((w.shape[0], 1), dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(w.shape[0], 1, dtype=torch.float64)
    for _ in range(n_steps):
        z = torch.relu(x @ w.T)
        logp = F.log_softmax(z @ torch.hstack([v, zero]), dim=-1)
        loss = -torch.mean(torch.sum(y_onehot * logp, dim=-1))
        loss.backward()
        with torch.no_grad():
            v -= 0.05 * v.grad
            v.grad.zero_()


def ratio(n_steps: int = 400) -> dict:
    import torch
    from dataclasses import asdict
    from simulations.synthetic import Fig4Config
    from simulations.synthetic_data import DataConfig, draw_instance, fit_reference_and_retrained
    from simulations.synthetic_methods import LogitGradients, unlearn

    torch.set_num_threads(1)
    seeds = (1000, 2000, 3000, 4000, 5000)
    inst = [draw_instance(DataConfig(), s, 1.0) for s in seeds]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 16, dtype=torch.float64, generator=gen)
    w = torch.randn(128, 16, dtype=torch.float64, generator=gen) / 4
    y = torch.nn.functional.one_hot(torch.randint(0, 2, (1200,), generator=gen), 2).double()
    cfg = DataConfig(fit_steps=n_steps, fit_max_grad_norm=np.inf)
    specs = Fig4Config().specs(1.0)
    specs.sort(key=lambda s: not s.uses_retain)
    theta = np.zeros((len(inst), 128))
    labels = [np.stack([getattr(i, n) for i in inst]) for n in ("y_forget", "y_retain", "y_idk")]
    grads = LogitGradients(specs, np.zeros((5, 200)), np.zeros((5, 1000)), *labels, scale=[s.lr for s in specs])
    t = {"authors_fit": [], "ours_fit": [], "ours_unlearn": []}
    for _ in range(3):  # interleaved, best of three
        start = time.process_time()
        _authors_fit_step(x, y, w, n_steps)
        t["authors_fit"].append((time.process_time() - start) / n_steps)          # one model
        start = time.process_time()
        fit_reference_and_retrained(cfg, inst)
        t["ours_fit"].append((time.process_time() - start) / n_steps / (2 * len(inst)))  # per model
        start = time.process_time()
        unlearn([i.z_forget for i in inst], [i.z_retain for i in inst], theta, grads, n_steps, 25)
        t["ours_unlearn"].append((time.process_time() - start) / n_steps / (len(inst) * len(specs)))
    best = {k: min(v) for k, v in t.items()}
    return {"per_model_step_us": {k: v * 1e6 for k, v in best.items()},
            "fit_speedup": best["authors_fit"] / best["ours_fit"],
            "note": "CPU time, one thread each; authors-style torch loop: one model per step; ours: reference and "
                    "retrained side by side, seeds in turn; unlearning: 6 methods side by side",
            "config": {"n_steps": n_steps, "torch_threads": 1, "specs": [asdict(s) for s in specs]}}


def ratio_in_child() -> dict:
    """``ratio()`` in a fresh process with one BLAS/OpenMP thread, as the experiment's workers run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_synthetic", "--ratio-child"], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_synthetic", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="whole-process runs (median reported)")
    p.add_argument("--skip-whole", action="store_true", help="only the per-step ratio")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--ratio-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ratio_child:
        print(json.dumps(ratio()))
        return 0
    report = {"ratio": ratio_in_child()}
    if not args.skip_whole:
        report["whole_figs_3_4_9_from_scratch"] = whole(args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r = report["ratio"]
    print("per (model) GD step, us: " + ", ".join(f"{k} {v:.1f}" for k, v in r["per_model_step_us"].items()))
    print(f"fit speed-up over the authors-style loop: {r['fit_speedup']:.1f}x  ({r['note']})")
    if "whole_figs_3_4_9_from_scratch" in report:
        w = report["whole_figs_3_4_9_from_scratch"]
        print(f"Figs 3+4+9 from scratch (whole process): median {w['median_s']:.1f} s "
              f"(min {w['min_s']:.1f}, max {w['max_s']:.1f}, runs {[round(x, 1) for x in w['runs_s']]}, "
              f"CPU s {[round(x, 1) for x in w['cpu_s']]}, "
              f"1-min load at start {[round(x, 1) for x in w['load_avg_1min_at_start']]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
