"""Theorem 2 on a language model: how fast GA and NPO move a fine-tuned LM away from itself.

    python -m llm collapse-rate --quick --json           # tiny target, 4 forget items, 100 steps
    python -m llm collapse-rate                          # sgd lr 1e-4, no clipping, 300 steps, 4 items
    python -m llm collapse-rate --model DIR --optimizer adamw --lr 1e-5 --max-grad-norm 1
    python -m figures.fig_llm_collapse_rate              # the figure, from the written result

The LLM analogue of ``python -m simulations.collapse_rate``. From one fine-tuned target (``--model
DIR``, or ``tiny``: a ~1M-parameter Llama fine-tuned once on the last ``finetune_items`` rows of
TOFU's full split, cached by the data's bytes and the recipe) it runs full-batch gradient steps of
GA and of NPO (each beta) on the forget items and records, at log-spaced steps t:
* forget_logratio: mean over forget items of log pi_t(y|x) - log pi_ref(y|x), answer tokens SUMMED
  (as NPO's loss uses them; pi_ref from llm/refcache.py's cache), the LLM counterpart of ||b||;
* param_distance ||theta_t - theta_ref||_2, npo_weight mean W = 2 sigma(beta log pi/pi_ref),
  retain_nll (token-mean NLL on a fixed retain subset), grad_norm (before clipping).
GA here is theory's ga_loss on the same summed log-probs (E[log pi(y|x)], Eq. 1), so that GA and
NPO start from the same gradient (W = 1 at t = 0) as in Theorem 2; the TOFU trainer's GA is a
token mean (the authors' code), i.e. the same direction at a ~1/(answer length) step size.
With ``--optimizer sgd --max-grad-norm 0`` (Theorem 2's plain gradient steps; constant lr in every
setting) it fits |D| = a t + c and |D| = c log(1 + t/tau) (~ c log t - c log tau for t >> tau) to each
method over the last decade of steps (llm/rate_fits.py) and reports both R^2, the slopes, and the
steps to reach |D| = --threshold (NPO/GA ratio); the same fits for ||theta - theta_ref||.
Writes ``<results>/llm_collapse_rate.json`` (default results/tofu_cpu, committed) atomically; the
figure reads it. Exit 2 on bad input.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from infra.files import write_json
from llm.data import DataError, load_split
from llm.formatting import collate, encode_qa, pad_id
from llm.models import ModelError, load_model_and_tokenizer, sequence_logprob, token_counts
from llm.rate_fits import crossing_step, fit_laws
from theory.objectives import ga_loss, nll_loss, npo_loss, npo_weight

__all__ = ["Config", "QUICK", "run", "run_method", "tiny_target", "record_steps", "main"]

METHODS = ("ga", "npo")
RESULT_NAME = "llm_collapse_rate.json"
TINY_RECIPE = {"epochs": 20, "lr": 3e-3, "batch_size": 16, "seed": 42, "version": 1}


@dataclass(frozen=True)
class Config:
    model: str = "tiny"
    data_dir: str | None = None
    forget: str = "forget01"
    n_forget: int = 4                 # 0: every item of the forget split
    methods: tuple = METHODS
    beta: tuple = (0.1, 0.5, 1.0)
    optimizer: str = "sgd"
    lr: float = 1e-4
    max_grad_norm: float = 0.0        # 0: off
    weight_decay: float = 0.0         # AdamW only
    steps: int = 300
    seeds: int = 1
    seed: int = 0
    retain_items: int = 16
    per_decade: int = 12
    threshold: float = 10.0           # |forget_logratio| in nats
    fit_from: float = 0.0             # fit the laws over t >= this (0: the last decade, t >= steps/10)
    finetune_items: int = 200         # --model tiny: rows of full.json the target learns
    template: str = "llama2"

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown method {bad[0] if bad else '(none)'!r}; use ga and/or npo")
        if not all(np.isfinite(b) and b > 0 for b in self.beta) or not self.beta:
            raise ValueError(f"every --beta must be > 0 (got {list(self.beta)})")
        if self.steps < 10:
            raise ValueError(f"--steps must be >= 10 (got {self.steps})")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"--optimizer must be sgd or adamw (got {self.optimizer!r})")
        if not self.lr > 0 or self.max_grad_norm < 0 or self.threshold <= 0:
            raise ValueError("need --lr > 0, --max-grad-norm >= 0 (0 = off) and --threshold > 0")
        if not 0 <= self.fit_from < self.steps:
            raise ValueError(f"--fit-from must be in [0, steps) (got {self.fit_from})")
        if self.seeds < 1 or self.n_forget < 0 or self.retain_items < 1 or self.per_decade < 1:
            raise ValueError("need --seeds >= 1, --n-forget >= 0, --retain-items >= 1, --per-decade >= 1")
        if self.seeds > 1 and self.n_forget == 0:
            raise ValueError("seeds differ only in which forget items they draw: pass --n-forget N "
                             "smaller than the split, or --seeds 1")


QUICK = dict(n_forget=3, steps=100, seeds=1, beta=(0.1, 1.0), retain_items=4, finetune_items=40,
             per_decade=10)


def record_steps(steps: int, per_decade: int) -> np.ndarray:
    """0, then ~per_decade log-spaced integer steps per decade up to ``steps`` (always included)."""
    grid = np.geomspace(1, steps, max(2, int(np.ceil(per_decade * np.log10(steps))) + 1))
    return np.unique(np.r_[0, np.round(grid).astype(int), steps])


# ---- the target and the data ---------------------------------------------------------------------

def tiny_target(cfg: Config, cache_dir: Path, log=print) -> Path:
    """A tiny Llama fine-tuned on the last ``finetune_items`` rows of full, cached by content hash."""
    from llm.train import TrainConfig, finetune
    full = load_split("full", cfg.data_dir)
    rows = full[-cfg.finetune_items:]
    key = hashlib.sha256(json.dumps({"rows": rows, "recipe": TINY_RECIPE, "template": cfg.template},
                                    sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir / f"tiny-target-{key}"
    if (out / "config.json").exists():
        return out
    log(f"fine-tuning the tiny target once on {len(rows)} TOFU rows -> {out}")
    r = TINY_RECIPE
    finetune(TrainConfig(model="tiny", data_dir=cfg.data_dir, split="full",
                         max_examples=cfg.finetune_items, epochs=r["epochs"], lr=r["lr"],
                         batch_size=r["batch_size"], effective_batch=r["batch_size"], seed=r["seed"],
                         template=cfg.template, out=str(out), overwrite=True, device="cpu"))
    return out


def forget_items(cfg: Config, seed: int) -> list[dict]:
    rows = load_split(cfg.forget, cfg.data_dir)
    if not rows:
        raise DataError(f"forget split {cfg.forget!r} has no items; pick a non-empty forgetNN split")
    if cfg.n_forget and cfg.n_forget < len(rows):
        pick = np.random.default_rng([cfg.seed + seed, 17]).choice(len(rows), cfg.n_forget, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    return rows


def retain_items(cfg: Config, forget: list[dict]) -> list[dict]:
    """The last ``retain_items`` rows of full before the forget split's authors (fixed, no seed)."""
    full = load_split("full", cfg.data_dir)
    n_forget_split = len(load_split(cfg.forget, cfg.data_dir))
    before = full[:len(full) - n_forget_split]
    return before[-cfg.retain_items:]


# ---- one run -------------------------------------------------------------------------------------

def _logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprob(logits, batch["labels"])


def run_method(model, tok, forget: list[dict], retain: list[dict], ref: torch.Tensor, cfg: Config,
               method: str, beta: float | None, progress=None, restore: bool = True) -> dict:
    """Full-batch steps of one method from the model's weights; the records at record_steps.
    ``restore``: put the starting weights back afterwards (for the next method)."""
    enc = lambda rows: collate([encode_qa(tok, r["question"], r["answer"], cfg.template) for r in rows],
                               pad_id(tok))
    fb, rb = enc(forget), enc(retain)
    ref = ref.to(torch.float64)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=cfg.lr) if cfg.optimizer == "sgd" else
           torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    marks = set(record_steps(cfg.steps, cfg.per_decade).tolist())
    rec = {k: [] for k in ("steps", "forget_logratio", "param_distance", "npo_weight", "retain_nll",
                           "grad_norm", "loss")}
    rec["diverged_at"] = None
    model.train()
    for t in range(cfg.steps + 1):
        logp = _logps(model, fb)
        if method == "ga":
            loss = ga_loss(logp)
        else:
            loss = npo_loss(logp, ref.to(logp.dtype), beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0
                                                   else float("inf"))
        if t in marks:
            ratio = logp.detach().double() - ref
            with torch.no_grad():
                retain_logp = _logps(model, rb)
                retain_nll = float(nll_loss((retain_logp.sum() / token_counts(rb["labels"]).sum()).reshape(1)))
                dist = torch.sqrt(sum(((p.detach() - start[n]) ** 2).sum().double()
                                      for n, p in model.named_parameters()))
            w = npo_weight(ratio, torch.zeros_like(ratio), beta if beta else 1.0)
            rec["steps"].append(t)
            rec["forget_logratio"].append(float(ratio.mean()))
            rec["param_distance"].append(float(dist))
            rec["npo_weight"].append(float(w.mean()) if beta else float("nan"))
            rec["retain_nll"].append(retain_nll)
            rec["grad_norm"].append(float(grad_norm))
            rec["loss"].append(float(loss.detach()))
            if not all(np.isfinite(rec[k][-1]) for k in ("forget_logratio", "param_distance")):
                # GA can overflow (log pi -> -inf): keep the finite records, say where it stopped
                for k in rec:
                    if isinstance(rec[k], list):
                        rec[k].pop()
                rec["diverged_at"] = t
                break
        if t == cfg.steps:
            break
        opt.step()
        if progress:
            progress.update(1)
    if restore:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
    return rec


def _reference(model, tok, forget, cfg: Config, cache_dir: Path, identity: str) -> torch.Tensor:
    from llm.refcache import cached_reference_logps
    enc = [encode_qa(tok, r["question"], r["answer"], cfg.template) for r in forget]
    values = cached_reference_logps(model, {"forget": enc}, pad_id(tok), cache_dir / "refcache",
                                    identity=identity, precision="fp32")
    return torch.as_tensor(values["forget"])


def _labels(cfg: Config):
    out = []
    for m in cfg.methods:
        out += [("ga", None)] if m == "ga" else [("npo", float(b)) for b in cfg.beta]
    return out


def run(cfg: Config, cache_dir="results/work/collapse_rate", log=print) -> dict:
    """Every method x seed from one target; per-method records (seed means) and law fits."""
    cfg.validate()
    cache_dir = Path(cache_dir)
    model_dir = tiny_target(cfg, cache_dir, log) if cfg.model == "tiny" else Path(cfg.model)
    model, tok = load_model_and_tokenizer(str(model_dir), dtype=torch.float32, data_dir=cfg.data_dir)
    from tqdm.auto import tqdm
    labels = _labels(cfg)
    bar = tqdm(total=cfg.steps * len(labels) * cfg.seeds, desc="collapse-rate", disable=None)
    per_label = {lab: [] for lab in labels}
    t0 = time.perf_counter()
    try:
        for s in range(cfg.seeds):
            forget = forget_items(cfg, s)
            retain = retain_items(cfg, forget)
            ref = _reference(model, tok, forget, cfg, cache_dir, str(model_dir.resolve()))
            for method, beta in labels:
                per_label[(method, beta)].append(
                    run_method(model, tok, forget, retain, ref, cfg, method, beta, bar))
    finally:
        bar.close()
    methods = [_summarise(method, beta, recs, cfg) for (method, beta), recs in per_label.items()]
    ga = next((m for m in methods if m["method"] == "ga"), None)
    for m in methods:
        m["steps_to_threshold_over_ga"] = (m["steps_to_threshold"] / ga["steps_to_threshold"]
                                           if ga and np.isfinite(ga["steps_to_threshold"]) else float("nan"))
    return {"config": asdict(cfg), "model_dir": str(model_dir), "n_forget": len(forget),
            "theorem2_setting": cfg.optimizer == "sgd" and cfg.max_grad_norm == 0,
            "seconds": round(time.perf_counter() - t0, 1), "methods": methods}


def _summarise(method, beta, recs, cfg: Config) -> dict:
    keys = ("forget_logratio", "param_distance", "npo_weight", "retain_nll", "grad_norm", "loss")
    n = min(len(r["steps"]) for r in recs)  # a seed that overflowed ends early: common records only
    mean = {k: np.mean([r[k][:n] for r in recs], axis=0) for k in keys}
    steps = np.asarray(recs[0]["steps"][:n])
    diverged = [r["diverged_at"] for r in recs if r["diverged_at"] is not None]
    div = np.abs(mean["forget_logratio"])
    return {"method": method, "beta": beta, "label": "GA" if method == "ga" else f"NPO b={beta:g}",
            "steps": steps.tolist(), **{k: v.tolist() for k, v in mean.items()},
            "fit": fit_laws(steps, div, cfg.fit_from or None),
            "param_fit": fit_laws(steps, mean["param_distance"], cfg.fit_from or None),
            "threshold": cfg.threshold, "diverged_at": min(diverged) if diverged else None,
            "steps_to_threshold": crossing_step(steps, np.maximum.accumulate(div), cfg.threshold)}


# ---- presenting ----------------------------------------------------------------------------------

def format_table(doc: dict) -> str:
    c = doc["config"]
    lines = [f"== {c['model']}: {c['forget']} ({doc['n_forget']} items), {c['optimizer']} lr={c['lr']:g}, "
             f"clip={c['max_grad_norm'] or 'off'}, {c['steps']} full-batch steps, {c['seeds']} seed(s) ==",
             f"{'method':<12} {'law of |D|':<12} {'R2 lin':>7} {'R2 log':>7} {'a (/step)':>10} {'c (/log)':>9} "
             f"{'tau':>7} {'exp':>5} {'|D|(T)':>8} {'|th-th0|':>9} {'W(T)':>6} {'retNLL':>7} "
             f"{'gnorm0':>7} {'gnormT':>7} {'law of |th-th0| (R2 lin/log)':<30} steps to |D|={c['threshold']:g} (xGA)"]
    for m in doc["methods"]:
        f, pf = m["fit"], m["param_fit"]
        t = m["steps_to_threshold"] if m["steps_to_threshold"] is not None else float("nan")
        cross = "-" if not np.isfinite(t) else f"{t:.4g}" + (
            "" if m["method"] == "ga" or m["steps_to_threshold_over_ga"] is None
            or not np.isfinite(m["steps_to_threshold_over_ga"])
            else f" (x{m['steps_to_threshold_over_ga']:.3g})")
        w = m["npo_weight"][-1] if m["npo_weight"][-1] is not None else float("nan")
        lines.append(f"{m['label']:<12} {f['law']:<12} {f['linear_r2']:>7.4f} {f['log_r2']:>7.4f} "
                     f"{f['linear_slope']:>10.4g} {f['log_c']:>9.4g} {f['log_tau']:>7.3g} "
                     f"{f['growth_exponent']:>5.2f} {abs(m['forget_logratio'][-1]):>8.4g} "
                     f"{m['param_distance'][-1]:>9.4g} {'-' if not np.isfinite(w) else f'{w:.3f}':>6} "
                     f"{m['retain_nll'][-1]:>7.3g} {m['grad_norm'][0]:>7.3g} {m['grad_norm'][-1]:>7.3g} "
                     f"{pf['law'] + ' (%.3f/%.3f)' % (pf['linear_r2'], pf['log_r2']):<30} {cross}")
    lines.append("(|D| = |mean forget log pi_t/pi_ref| in nats, summed over answer tokens; both laws "
                 "fitted over the last decade of each method's records: a t + c and c log t + d, "
                 "tau = exp(-d/c); exp = d log|D|/d log t there: 1 linear, -> 0 logarithmic, > 1.5 "
                 "superlinear)")
    for m in doc["methods"]:
        if m.get("diverged_at") is not None:
            lines.append(f"({m['label']}: the log-ratio overflowed (log pi -> -inf) at step "
                         f"{m['diverged_at']}; its records and fits stop at step {m['steps'][-1]})")
    if not doc["theorem2_setting"]:
        lines.append("(not Theorem 2's setting: the laws are fitted all the same, for comparison)")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(prog="python -m llm collapse-rate", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help="fine-tuned target folder, or tiny (default)")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    p.add_argument("--forget", default=d.forget, help="forget split (default forget01)")
    p.add_argument("--n-forget", type=int, default=d.n_forget, help="forget items to use (0: all)")
    p.add_argument("--methods", nargs="+", default=list(d.methods), help="ga and/or npo")
    p.add_argument("--beta", type=float, nargs="+", default=list(d.beta), help="NPO betas")
    p.add_argument("--optimizer", default=d.optimizer, help="sgd (Theorem 2) or adamw")
    p.add_argument("--lr", type=float, default=d.lr, help="constant learning rate (default 1e-4)")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="clipping (0: off)")
    p.add_argument("--steps", type=int, default=d.steps, help="full-batch steps (default 300)")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds (draw --n-forget items each)")
    p.add_argument("--seed", type=int, default=d.seed, help="first seed")
    p.add_argument("--retain-items", type=int, default=d.retain_items, help="retain NLL items")
    p.add_argument("--per-decade", type=int, default=d.per_decade, help="records per decade")
    p.add_argument("--threshold", type=float, default=d.threshold, help="|D| threshold in nats")
    p.add_argument("--fit-from", type=float, default=d.fit_from,
                   help="fit the laws over t >= this (0: the last decade)")
    p.add_argument("--quick", action="store_true", help=f"CI-sized run: {QUICK}")
    p.add_argument("--results", default="results/tofu_cpu",
                   help=f"folder of {RESULT_NAME} (the committed CPU-scale LLM results)")
    p.add_argument("--cache", default="results/work/collapse_rate",
                   help="tiny target and reference log-prob cache")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return p


def config_from_args(args) -> Config:
    cfg = Config(model=args.model, data_dir=args.data_dir, forget=args.forget, n_forget=args.n_forget,
                 methods=tuple(args.methods), beta=tuple(args.beta), optimizer=args.optimizer,
                 lr=args.lr, max_grad_norm=args.max_grad_norm, steps=args.steps, seeds=args.seeds,
                 seed=args.seed, retain_items=args.retain_items, per_decade=args.per_decade,
                 threshold=args.threshold, fit_from=args.fit_from)
    if args.quick:  # quick values replace only what was left at its default
        d = Config()
        cfg = replace(cfg, **{k: v for k, v in QUICK.items() if getattr(cfg, k) == getattr(d, k)})
    return cfg


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    try:
        cfg.validate()
        if cfg.model != "tiny" and not Path(cfg.model).is_dir():
            raise ValueError(f"--model {cfg.model!r} is not a folder; pass a fine-tuned checkpoint "
                             f"folder or tiny")
        forget_items(cfg, 0)  # every data error before any compute
        doc = run(cfg, args.cache, log)
        path = Path(args.results) / RESULT_NAME
        write_json(path, _finite(doc))
    except (ValueError, DataError, ModelError) as exc:
        print(f"{parser.prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write results ({exc}); check --results/--cache",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_finite(doc), allow_nan=False))
    else:
        print(format_table(doc))
        print(f"\nwrote {path}; figure: python -m figures.fig_llm_collapse_rate --from-results {args.results}"
              f"  ({doc['seconds']} s)")
    return 0


def _finite(x):
    """JSON has no NaN: values never reached / not defined become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


if __name__ == "__main__":
    raise SystemExit(main())
