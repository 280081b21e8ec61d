"""Wall-clock of ``python -m simulations.collapse_rate`` as whole processes (median of repeats).

    python benchmarks/bench_collapse_rate.py [--repeats 3] [--json]

Cases and their budgets (issue 3):
* default     the main command as a user runs it (both settings, 1e5 steps, figure)   < 10 s
* 1e6 steps   logistic, gaussian data, n_f = 20, d = 2000, three betas (+ GA), 3 seeds < 60 s
Every run uses --force and throw-away --out/--results, so nothing is read from a cache. Prints
median, min and max wall-clock per case, the median CPU seconds (user + sys of the process: on a
shared machine wall-clock also counts time waiting for a core, CPU seconds do not), and the long
run's time relative to the default run (measured in the same invocation, so load affects both).
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

CASES = {
    "default": ([], 10.0),
    "1e6 steps": (["--setting", "logistic", "--data", "gaussian", "--n-forget", "20",
                   "--dim", "2000", "--beta", "0.5", "1", "2", "--steps", "1e6"], 60.0),
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "simulations.collapse_rate", "--force", "--json",
               "--out", os.path.join(tmp, "fig"), "--results", os.path.join(tmp, "res"), *extra]
        cpu, start = _children_cpu(), time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode not in (0, 1):  # 1: a check failed, still a timing
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{done.stderr}")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=tuple(CASES), default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = {}
    for name, (extra, budget) in CASES.items():
        if args.only and name != args.only:
            continue
        runs = [time_once(extra) for _ in range(args.repeats)]
        times = [wall for wall, _ in runs]
        med = statistics.median(times)
        rows[name] = {"median_s": med, "min_s": min(times), "max_s": max(times), "budget_s": budget,
                      "cpu_median_s": statistics.median(cpu for _, cpu in runs),
                      "within_budget": med < budget, "runs": times}
    if args.json:
        print(json.dumps({"load_average_1min": load, "cpus": os.cpu_count(), "cases": rows}))
    else:
        print(f"load average (1 min) at start: {load:.2f} on {os.cpu_count()} CPUs")
        print(f"{'case':<12} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>7} {'budget s':>9}")
        for name, r in rows.items():
            verdict = "PASS" if r["within_budget"] else "FAIL (wall)"
            print(f"{name:<12} {r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['max_s']:>7.2f} "
                  f"{r['cpu_median_s']:>7.2f} {r['budget_s']:>9.0f}  {verdict}")
        if len(rows) == 2:
            ratio = rows["1e6 steps"]["median_s"] / rows["default"]["median_s"]
            print(f"1e6-step run / default run: x{ratio:.2f}")
    return 0 if all(r["within_budget"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
