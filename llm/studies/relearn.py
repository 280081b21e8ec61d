"""The relearning attack: fine-tune an unlearned model a few steps on part of the forget set.

    python -m llm relearn --model runs/npo_rt --forget forget01 --relearn-split first_half \\
        --steps 20 --lr 1e-3 --eval-every 5 --baseline runs/retain99 \\
        --retain-logs runs/retain99/eval/TOFU_EVAL.json --out runs/npo_rt/relearn

"Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign Relearning" (Hu et al.
2024) recovers forgotten answers by fine-tuning the unlearned model on a small slice of related
data. Here the slice is part of the forget set (``--relearn-split``, below) and the model is
scored on the slice itself (what re-reading restores) and on the rest of the forget set, the
*held-out* half (what comes back by transfer: knowledge that was hidden, not removed). Every
``--eval-every`` steps both halves get the forget metrics (truth ratio, ROUGE-L recall,
answer probability, Forget Quality against the retain model's log when ``--retain-logs`` is given),
so a figure shows recovery against steps.

Splits of the forget set (TOFU: 20 QA pairs per author, author by author):
  first_half       relearn on the first half of the forget authors (all their QA pairs), hold out
                   the others (default; the held-out authors were never shown to the attack)
  second_half      the reverse
  half_per_author  relearn on the first 10 QA pairs of every forget author, hold out the last 10
                   (same authors, other facts)

The baseline (``--baseline RETAIN``) is the same attack, same seed and data order, on the retain
model, which never saw the forget set: what K steps teach a model from scratch. Recovery is
reported relative to it: ``excess`` = unlearned model's metric after K steps minus the baseline's
(> 0 on the held-out half: the unlearned model knows more than a model that never learned it).

The training loop, optimizer and schedule are the trainer's (llm/train/loop.py ``fit``: AdamW, weight
decay 0.01, clipping 1.0, no warm-up, linear decay to 0 at step K), the scoring is
llm/evaluate/scoring.py's. Writes ``--out`` atomically: ``RELEARN.json`` (curves and recovery),
``log.jsonl`` (the trainer's per-step rows and the eval rows), ``baseline/log.jsonl``.
The relearned weights are not kept.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.cli import parser, run
from infra.files import write_json
from llm.data.tofu import QA_PER_AUTHOR, DataError, load_split
from llm.evaluate.summary import EvalError, _reference_stat, _tr_stat, task_summary

__all__ = ["SPLITS", "RelearnConfig", "RelearnError", "split_indices", "check_config",
           "relearn_curve", "recovery", "relearn", "main"]

SPLITS = ("first_half", "second_half", "half_per_author")
RESULT_FILE = "RELEARN.json"
#: the forget metrics each eval reports per half; "fq" only with a retain log
METRICS = {"truth_ratio": "forget_truth_ratio", "rouge": "forget_Q_A_ROUGE", "prob": "forget_Q_A_Prob"}


class RelearnError(ValueError):
    """A user-fixable relearning option; one line naming the fix."""


@dataclass
class RelearnConfig:
    model: str
    forget: str = "forget01"
    split: str = "first_half"
    steps: int = 10
    lr: float = 1e-5
    batch_size: int = 4
    eval_every: int = 1
    seed: int = 0
    fq: bool = False
    retain_logs: str | None = None
    data_dir: str | None = None
    template: str = "llama2"
    max_new_tokens: int = 200
    eval_batch_size: int = 32
    device: str = "cpu"
    qa_per_author: int = QA_PER_AUTHOR   # the pipeline's cpu preset keeps 2 per author


def split_indices(n_items: int, split: str, per_author: int = QA_PER_AUTHOR) -> tuple[list[int], list[int]]:
    """(indices relearned on, indices held out) of a forget set of ``n_items`` QA pairs, stored
    author by author, ``per_author`` each."""
    if split not in SPLITS:
        raise RelearnError(f"unknown --relearn-split {split!r}; use {', '.join(SPLITS)}")
    if n_items % per_author:
        raise RelearnError(f"the forget set has {n_items} items, not whole authors of "
                           f"{per_author}; use a TOFU forgetNN split")
    authors = n_items // per_author
    if split == "half_per_author":
        if per_author < 2:
            raise RelearnError("--relearn-split half_per_author needs 2 or more QA pairs per author")
        first = [a * per_author + j for a in range(authors) for j in range(per_author // 2)]
    else:
        if authors < 2:
            raise RelearnError(f"--relearn-split {split} needs at least 2 forget authors (this "
                               f"set has {authors}); use half_per_author")
        first = list(range(authors // 2 * per_author))
    rest = [i for i in range(n_items) if i not in set(first)]
    return (first, rest) if split != "second_half" else (rest, first)


def check_config(cfg: RelearnConfig) -> None:
    if cfg.steps < 0:
        raise RelearnError(f"--steps must be >= 0 (got {cfg.steps})")
    if cfg.split not in SPLITS:
        raise RelearnError(f"unknown --relearn-split {cfg.split!r}; use {', '.join(SPLITS)}")
    if cfg.fq and cfg.retain_logs is None:
        raise RelearnError("--fq needs the retain model's log: pass --retain-logs RETAIN/TOFU_EVAL.json")
    if cfg.eval_every < 1 or cfg.batch_size < 1:
        raise RelearnError("--eval-every and --batch-size must be >= 1")
    if not cfg.lr > 0:
        raise RelearnError(f"--lr must be > 0 (got {cfg.lr})")


# ---- the attack ---------------------------------------------------------------------------------

def _half_metrics(records: dict, idx: list[int], retain_tr) -> dict:
    rec = {str(i): records[str(i)] for i in idx}
    s = task_summary("forget", rec)
    out = {k: s[v] for k, v in METRICS.items()}
    if retain_tr is not None:
        from llm.evaluate import metrics
        ref = {k: [v[i] for i in idx] for k, v in retain_tr.items()}
        out["fq"] = metrics.forget_quality(_tr_stat("forget", rec.values(), "exact"),
                                           _reference_stat(ref, "exact"))
    return out


def _eval_fn(cfg: RelearnConfig, halves: dict[str, list[int]], retain_tr):
    """The trainer's callback: forget-set scoring only (the other TOFU tasks are not read)."""
    from llm.data.formatting import pad_id
    from llm.evaluate.generation import greedy_generate
    from llm.evaluate.scoring import EvalItems, answer_losses
    cache: dict = {}

    def eval_fn(model, tokenizer, step, epoch) -> dict:
        if "plan" not in cache:
            cache["plan"] = EvalItems(tokenizer, cfg.forget, cfg.data_dir, cfg.template, None,
                                     tasks=("forget",))
        plan = cache["plan"]
        losses = answer_losses(model, plan.encoded, pad_id(tokenizer))
        gens = greedy_generate(model, tokenizer, plan.prompts, cfg.eval_batch_size, cfg.max_new_tokens)
        records = plan.records(losses, gens)["forget"]
        return {name: _half_metrics(records, idx, retain_tr) for name, idx in halves.items()}

    return eval_fn


def relearn_curve(model_path: str, cfg: RelearnConfig, work: Path) -> list[dict]:
    """Run the attack on ``model_path``; ``work`` (must not exist) receives the trainer's
    log.jsonl. Returns the eval rows [{"step", "relearn": {...}, "heldout": {...}}, ...]."""
    import torch

    from llm.train import distributed
    from llm.train.config import TrainConfig, resolve
    from llm.data.order import DataOrder
    from llm.evaluate.logs import retain_reference
    from llm.data.formatting import encode_qa
    from llm.models import load_model_and_tokenizer
    from llm.train.loop import Run, fit

    check_config(cfg)
    rows = load_split(f"{cfg.forget}_perturbed", cfg.data_dir)
    train_idx, held_idx = split_indices(len(rows), cfg.split, cfg.qa_per_author)
    retain_tr = None
    if cfg.retain_logs is not None:
        retain_tr = retain_reference(cfg.retain_logs, cfg.forget, None)["tr"]
        if len(next(iter(retain_tr.values()))) != len(rows):
            raise RelearnError(f"{cfg.retain_logs} scores {len(next(iter(retain_tr.values())))} "
                               f"forget items, {cfg.forget} has {len(rows)}; evaluate the retain "
                               f"model on all of {cfg.forget}")
    tcfg = resolve(TrainConfig(model=model_path, lr=cfg.lr, batch_size=cfg.batch_size,
                               effective_batch=cfg.batch_size, warmup_epochs=0.0, seed=cfg.seed,
                               eval_every=cfg.eval_every, template=cfg.template, epochs=1,
                               data_dir=cfg.data_dir, device=cfg.device), "finetune", 1)
    dist = distributed.Dist(device=torch.device(cfg.device))
    model, tok = load_model_and_tokenizer(model_path, device=cfg.device, data_dir=cfg.data_dir,
                                          dtype=torch.float32)
    train = [encode_qa(tok, rows[i]["question"], rows[i]["answer"], cfg.template) for i in train_idx]
    n = len(train)
    plan = DataOrder(n, 0, 0, cfg.batch_size, cfg.steps, max(1, n // cfg.batch_size), 0, cfg.seed)
    halves = {"relearn": train_idx, "heldout": held_idx}
    fit(Run(tcfg, "finetune", dist, model, tok, plan, train), work,
        _eval_fn(cfg, halves, retain_tr))
    log = [json.loads(r) for r in (work / "log.jsonl").read_text().splitlines()]
    return [{"step": r["step"], **r["summary"]} for r in log if r.get("event") == "eval"]


def recovery(curve: list[dict], baseline: list[dict] | None) -> dict:
    """Per half and metric: before (step 0), after (last step), gain = after - before, and with a
    baseline curve its after and ``excess`` = after - baseline's after."""
    out = {}
    for half in ("relearn", "heldout"):
        out[half] = {}
        for m in curve[0][half]:
            before, after = curve[0][half][m], curve[-1][half][m]
            row = {"before": before, "after": after, "gain": after - before}
            if baseline is not None:
                b = baseline[-1][half][m]
                row.update(baseline_before=baseline[0][half][m], baseline_after=b, excess=after - b)
            out[half][m] = row
    return out


def relearn(cfg: RelearnConfig, out: Path, baseline_model: str | None = None,
            overwrite: bool = False) -> dict:
    """The attack on ``cfg.model`` (and on ``baseline_model``), written atomically to ``out``."""
    check_config(cfg)
    out = Path(out)
    if out.exists() and not overwrite:
        raise RelearnError(f"{out} exists; pass --overwrite or another --out")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)  # nothing to resume: a stale attempt is redone
    work.mkdir(parents=True)
    curve = relearn_curve(cfg.model, cfg, work / "train")
    base = relearn_curve(baseline_model, cfg, work / "baseline") if baseline_model else None
    os.replace(work / "train" / "log.jsonl", work / "log.jsonl")
    (work / "train").rmdir()
    halves = split_indices(_n_forget(cfg), cfg.split, cfg.qa_per_author)
    result = {"config": dataclasses.asdict(cfg), "baseline_model": baseline_model,
              "n_relearn": len(halves[0]), "n_heldout": len(halves[1]),
              "curve": curve, "baseline": base, "recovery": recovery(curve, base)}
    write_json(work / RESULT_FILE, result)
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return result


def _n_forget(cfg: RelearnConfig) -> int:
    return len(load_split(f"{cfg.forget}_perturbed", cfg.data_dir))


# ---- command line -------------------------------------------------------------------------------

PROG = "python -m llm relearn"


def _parser():
    p = parser(PROG, __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2])
    p.add_argument("--model", required=True, help="unlearned model: checkpoint folder or preset")
    p.add_argument("--forget", default="forget01", help="forget split (forgetNN)")
    p.add_argument("--relearn-split", dest="split", default="first_half", help=", ".join(SPLITS))
    p.add_argument("--steps", type=int, default=10, help="optimizer steps K (0: evaluate only)")
    p.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (AdamW, linear decay)")
    p.add_argument("--batch-size", type=int, default=4, help="QA pairs per step")
    p.add_argument("--eval-every", type=int, default=1, help="score both halves every N steps")
    p.add_argument("--seed", type=int, default=0, help="data order")
    p.add_argument("--baseline", default=None, metavar="RETAIN",
                   help="retain model: the same attack on it is the baseline")
    p.add_argument("--retain-logs", default=None, metavar="LOG",
                   help="retain model's TOFU_EVAL.json: adds Forget Quality per half")
    p.add_argument("--fq", action="store_true", help="require Forget Quality (needs --retain-logs)")
    p.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    p.add_argument("--template", default="llama2", choices=["llama2", "qa", "chat"])
    p.add_argument("--max-new-tokens", type=int, default=200, help="generation length for ROUGE")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", required=True, help="output folder (RELEARN.json, log.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from llm.train.config import ConfigError
    from llm.models import ModelError
    return run(PROG, _main, args, user_errors=(RelearnError, EvalError, DataError, ModelError, ConfigError))


def _main(args) -> int:
    cfg = RelearnConfig(model=args.model, forget=args.forget, split=args.split, steps=args.steps,
                        lr=args.lr, batch_size=args.batch_size, eval_every=args.eval_every,
                        seed=args.seed, fq=args.fq or args.retain_logs is not None,
                        retain_logs=args.retain_logs, data_dir=args.data_dir, template=args.template,
                        max_new_tokens=args.max_new_tokens, device=args.device)
    check_config(cfg)
    load_split(f"{cfg.forget}_perturbed", cfg.data_dir)  # fail before loading a model
    result = relearn(cfg, Path(args.out), args.baseline, args.overwrite)
    if args.json:
        print(json.dumps(result["recovery"], indent=2, sort_keys=True))
        return 0
    print(f"relearned {cfg.steps} steps on {result['n_relearn']} {cfg.forget} items ({cfg.split}), "
          f"held out {result['n_heldout']}")
    for half, rows in result["recovery"].items():
        for m, r in rows.items():
            extra = (f"  baseline {r['baseline_before']:.4g} -> {r['baseline_after']:.4g}  "
                     f"excess {r['excess']:+.4g}" if "excess" in r else "")
            print(f"{half:<8} {m:<12} {r['before']:.4g} -> {r['after']:.4g}{extra}")
    print(f"wrote {Path(args.out) / RESULT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
