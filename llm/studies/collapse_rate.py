"""Theorem 2 on a language model: how fast GA and NPO move a fine-tuned LM away from itself.

    python -m llm collapse-rate --quick --json           # tiny target, 4 forget items, 100 steps
    python -m llm collapse-rate                          # sgd lr 1e-4, no clipping, 300 steps, 4 items
    python -m llm collapse-rate --model DIR --optimizer adamw --lr 1e-5 --max-grad-norm 1
    python -m llm collapse-rate --model smol --quick     # SmolLM2-135M-Instruct, fine-tuned once
    python -m figures.fig_llm_collapse_rate              # the figure, from the written result

The LLM analogue of ``python -m simulations.collapse_rate``. From one fine-tuned target (``--model
DIR``, or ``tiny``: a ~1M-parameter Llama fine-tuned once on the last ``finetune_items`` rows of
TOFU's full split, a stage in --cache keyed by those rows, the recipe and the code that trains it;
``smol``: SmolLM2-135M-Instruct fine-tuned the same way with its own recipe, ``TARGET_RECIPES``)
it runs full-batch gradient steps of GA and of NPO (each beta) on the forget items and records, at
log-spaced steps t:
* forget_logratio: mean over forget items of log pi_t(y|x) - log pi_ref(y|x), answer tokens SUMMED
  (as NPO's loss uses them; pi_ref from llm/train/refcache.py's cache), the LLM counterpart of ||b||;
* param_distance ||theta_t - theta_ref||_2, npo_weight mean W = 2 sigma(beta log pi/pi_ref),
  retain_nll (token-mean NLL on a fixed retain subset), grad_norm (before clipping).
GA here is theory's ga_loss on the same summed log-probs (E[log pi(y|x)], Eq. 1), so that GA and
NPO start from the same gradient (W = 1 at t = 0) as in Theorem 2; the TOFU trainer's GA is a
token mean (the authors' code), i.e. the same direction at a ~1/(answer length) step size.
With ``--optimizer sgd --max-grad-norm 0`` (Theorem 2's plain gradient steps; constant lr in every
setting) it fits |D| = a t + c and |D| = c log(1 + t/tau) (~ c log t - c log tau for t >> tau) to each
method over the last decade of steps (theory/fits.py) and reports both R^2, the slopes, and the
steps to reach |D| = --threshold (NPO/GA ratio); the same fits for ||theta - theta_ref||.
Writes ``<results>/llm_collapse_rate.json`` (default results/tofu_cpu, committed) atomically; the
figure reads it. Exit 2 on bad input. The settings, the target and the items:
llm/studies/collapse_rate_setup.py.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from infra.cli import check_output_dir, check_output_file, parser, run as run_cli
from infra.files import finite, write_json
from llm.studies.collapse_rate_report import DEFAULT_RESULTS, RESULT_NAME, format_table
from llm.studies.collapse_rate_setup import (QUICK, TARGET_RECIPES, TINY_RECIPE, Config, forget_items, record_steps,
                                     retain_items, tiny_target)
from llm.data.formatting import collate, encode_qa, pad_id
from llm.models import answer_logprob, default_template, load_model_and_tokenizer, smol_gguf, token_counts
from theory.fits import crossing_step, fit_laws
from theory.objectives import ga_loss, nll_loss, npo_loss, npo_weight

__all__ = ["Config", "QUICK", "TINY_RECIPE", "run", "run_method", "tiny_target", "record_steps", "main"]

PROG = "python -m llm collapse-rate"


# ---- one run -------------------------------------------------------------------------------------

def _logps(model, batch):
    return answer_logprob(model, batch["input_ids"], batch["attention_mask"], batch["labels"])


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
    from llm.train.refcache import cached_reference_logps
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
    model_dir = tiny_target(cfg, cache_dir, log) if cfg.model in TARGET_RECIPES else Path(cfg.model)
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
            "steps_to_threshold": crossing_step(steps, div, cfg.threshold)}


# ---- command line ------------------------------------------------------------------------------

def build_parser():
    d = Config()
    p = parser(PROG, __doc__)
    p.add_argument("--model", default=d.model, help="fine-tuned target folder, or tiny / smol "
                   "(fine-tuned once on the last rows of full, cached)")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    p.add_argument("--forget", default=d.forget, help="forget split")
    p.add_argument("--n-forget", type=int, default=d.n_forget, help="forget items to use (0: all)")
    p.add_argument("--methods", nargs="+", default=list(d.methods), help="ga and/or npo")
    p.add_argument("--beta", type=float, nargs="+", default=list(d.beta), help="NPO betas")
    p.add_argument("--optimizer", default=d.optimizer, help="sgd (Theorem 2) or adamw")
    p.add_argument("--lr", type=float, default=d.lr, help="constant learning rate")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="clipping (0: off)")
    p.add_argument("--steps", type=int, default=d.steps, help="full-batch steps")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds (draw --n-forget items each)")
    p.add_argument("--seed", type=int, default=d.seed, help="first seed")
    p.add_argument("--retain-items", type=int, default=d.retain_items, help="retain NLL items")
    p.add_argument("--per-decade", type=int, default=d.per_decade, help="records per decade")
    p.add_argument("--threshold", type=float, default=d.threshold, help="|D| threshold in nats")
    p.add_argument("--fit-from", type=float, default=d.fit_from,
                   help="fit the laws over t >= this (0: the last decade)")
    p.add_argument("--quick", action="store_true", help=f"CI-sized run: {QUICK}")
    p.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help=f"folder of {RESULT_NAME} (the committed CPU-scale LLM results)")
    p.add_argument("--cache", default="results/work/collapse_rate",
                   help="tiny target and reference log-prob cache")
    return p


def config_from_args(args) -> Config:
    cfg = Config(model=args.model, data_dir=args.data_dir, forget=args.forget, n_forget=args.n_forget,
                 methods=tuple(args.methods), beta=tuple(args.beta), optimizer=args.optimizer,
                 lr=args.lr, max_grad_norm=args.max_grad_norm, steps=args.steps, seeds=args.seeds,
                 seed=args.seed, retain_items=args.retain_items, per_decade=args.per_decade,
                 threshold=args.threshold, fit_from=args.fit_from,
                 template=default_template(args.model))
    if args.quick:  # quick values replace only what was left at its default
        d = Config()
        cfg = replace(cfg, **{k: v for k, v in QUICK.items() if getattr(cfg, k) == getattr(d, k)})
    return cfg


def main(argv=None) -> int:
    return run_cli(PROG, _main, build_parser().parse_args(argv))


def _main(args) -> int:
    cfg = config_from_args(args)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    cfg.validate()
    if cfg.model not in TARGET_RECIPES and not Path(cfg.model).is_dir():
        raise ValueError(f"--model {cfg.model!r} is not a folder; pass a fine-tuned checkpoint "
                         f"folder, tiny or smol")
    if cfg.model == "smol":
        smol_gguf()  # the one-line install hint before any compute
    forget_items(cfg, 0)  # every data error before any compute
    path = check_output_file(check_output_dir(args.results, "--results") / RESULT_NAME, "--results")
    check_output_dir(args.cache, "--cache")  # both before minutes of compute, not after
    try:
        doc = finite(run(cfg, args.cache, log))  # JSON has no NaN: thresholds never reached are null
        write_json(path, doc)
    except OSError as exc:
        raise OSError(f"cannot write results ({exc}); check --results/--cache") from None
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        print(format_table(doc))
        print(f"\nwrote {path}; figure: python -m figures.fig_llm_collapse_rate --from-results {args.results}"
              f"  ({doc['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
