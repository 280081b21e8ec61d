"""The memory planner (llm/memory.py) against the measured peak of real runs, under ddp and fsdp.

    TOFU_DATA_DIR=/path/to/tofu python benchmarks/bench_plan.py [--model small] [--batch-size 4]
    python benchmarks/bench_plan.py --device cuda --processes 1 --model DIR ...   # on a GPU

Each strategy runs as ``--processes`` (2) processes under torchrun (gloo on CPU), NPO+RT with the
cached reference (fp32 on CPU), ``--steps`` optimizer steps. On a GPU the measured peak is
torch.cuda.max_memory_allocated over the training steps. On CPU rank 0 measures the training peak as the bytes its model holds when
training starts (parameters and buffers; fsdp: its shards) plus the largest growth of the C heap
in use during training (glibc mallinfo2, sampled by a thread: torch's CPU allocator, gloo's
buffers, everything but Python's small objects). Not tracemalloc (torch allocates outside Python's
allocator), not RSS (it counts the tokenizer trainer's and the libraries' memory, and glibc keeps
freed pages: on this preset RSS growth was ~2x the heap peak), and not the torch profiler's memory
events (their running sum changed by 70 % between identical runs).
The planner is asked the same question from the configuration alone (workspace 0 on CPU; the
sequence length is the longest padded micro-batch the run actually formed). Prints a table and,
with --json, one document; writes results/bench_plan.json atomically.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapSampler:
    """Bytes in use in the C heap (glibc mallinfo2: malloc'd chunks + mmapped blocks), sampled
    every ~0.2 ms by a thread; ``peak`` is the largest sample since ``start``. torch's CPU
    allocator, gloo and the libraries all allocate there; Python's small-object arenas do not."""

    def __init__(self):
        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = _MallInfo2
        self.peak, self._stop = 0, threading.Event()

    def in_use(self) -> int:
        m = self._libc.mallinfo2()
        return m.uordblks + m.hblkhd

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.in_use())
            time.sleep(0.0002)

    def __enter__(self):
        sys.setswitchinterval(1e-4)  # let the sampler in between torch's ops
        self.peak = self.in_use()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.in_use())


def _tensor_bytes(*modules) -> int:
    """Bytes of the parameters and buffers this rank holds (a DTensor's local shard only)."""
    total = 0
    for module in modules:
        if module is None:
            continue
        for t in [*module.parameters(), *module.buffers()]:
            local = t.to_local() if hasattr(t, "to_local") else t
            total += local.numel() * local.element_size()
    return total


def worker(args) -> None:
    """One rank of the measured run (under torchrun); rank 0 writes ``args.result``."""
    import gc

    import torch
    from llm.train import distributed
    from llm.data.formatting import collate
    from llm.train.loop import TrainConfig, fit
    from llm.train.unlearning import prepare_run
    torch.set_num_threads(1)
    dist = distributed.setup(args.device, group=True)
    cfg = TrainConfig(model=args.model, forget=args.forget, method="npo_rt", max_examples=args.examples,
                      batch_size=args.batch_size, effective_batch=args.batch_size * dist.world,
                      epochs=10, lr=1e-4, device=args.device, precision=args.precision,
                      strategy=args.strategy, ref_cache=args.ref_cache, stop_after=args.steps, seed=0,
                      gradient_checkpointing=args.gradient_checkpointing)
    run = prepare_run(cfg, "unlearn", dist)
    gc.collect()
    cuda = run.dist.device.type == "cuda"
    heap = HeapSampler()
    held = _tensor_bytes(run.model, run.ref_model)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = time.perf_counter()
    with heap:
        start = heap.in_use()
        fit(run)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - seconds
    peak = torch.cuda.max_memory_allocated() if cuda else heap.peak - start + held
    length = 0
    for step in range(args.steps):
        for items in run.plan.items(step, dist.rank, dist.world, run.cfg.batch_size, run.cfg.grad_accum):
            rows = [run.train[i] for i, *_ in items] + [run.retain[r] for _, r, *_ in items]
            length = max(length, collate(rows, run.tokenizer.pad_token_id)["input_ids"].shape[1])
    if dist.main:
        Path(args.result).write_text(json.dumps({
            "measured_peak_bytes": peak, "measure": "torch.cuda.max_memory_allocated" if cuda else
            "C heap growth + model bytes", "max_length": length, "processes": dist.world,
            "precision": run.precision, "seconds_per_step": seconds / args.steps}))
    distributed.teardown(dist)


def measure(args, strategy: str, tmp: Path) -> dict:
    result = tmp / f"{strategy}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    if args.data_dir:
        env["TOFU_DATA_DIR"] = str(args.data_dir)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(args.processes), __file__, "--worker", "--strategy", strategy, "--result", str(result),
           "--model", args.model, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--examples", str(args.examples), "--ref-cache", str(tmp / "refcache"), "--forget", args.forget,
           "--device", args.device, "--precision", args.precision,
           "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"error: the {strategy} run failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def compare(args) -> dict:
    from llm.memory import Setup, plan
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("ddp", "fsdp"):
            m = measure(args, strategy, Path(tmp))
            p = plan(Setup(model=args.model, gpus=m["processes"], gpu_mem=1e9, strategy=strategy,
                           method="npo_rt", batch_size=args.batch_size, max_length=m["max_length"],
                           precision=m["precision"], gradient_checkpointing=args.gradient_checkpointing,
                           workspace_gb=0.0))
            planned = p["per_gpu_gb"]["total"] * 1e9   # no workspace: neither measure sees it
            rows[strategy] = {**m, "planned_bytes": planned, "planned_gb": p["per_gpu_gb"],
                              "error": planned / m["measured_peak_bytes"] - 1}
    return {"model": args.model, "batch_size": args.batch_size, "steps": args.steps, "device": args.device,
            "processes": args.processes, "rows": rows}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--examples", type=int, default=40, help="forget items (forget01 has 40)")
    ap.add_argument("--forget", default="forget01")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (peak = torch.cuda.max_memory_allocated)")
    ap.add_argument("--precision", default="auto", help="auto: fp32 on CPU, bf16-mixed on GPU")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_plan.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--ref-cache", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    doc = compare(args)
    from infra.files import write_json
    write_json(args.out, doc)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(f"{args.model}, NPO+RT, micro-batch {args.batch_size}, {args.processes} process(es) on "
          f"{args.device}, per rank:")
    print(f"{'strategy':<9}{'length':>7}{'planned MB':>12}{'measured MB':>13}{'error':>8}")
    for s, r in doc["rows"].items():
        print(f"{s:<9}{r['max_length']:>7}{r['planned_bytes'] / 1e6:>12.1f}"
              f"{r['measured_peak_bytes'] / 1e6:>13.1f}{r['error']:>+8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
