"""Where does NPO's advantage over GA hold? A learning-rate sweep on the cpu preset's TOFU cut.

    python -m llm pipeline --preset cpu --tasks forget05 forget10 --methods GA --no-extras \\
        --out results/work/lr_sweep_base --work results/work/tofu_cpu     # target, retain model, data
    python -m llm lr-sweep --work results/work/tofu_cpu                    # the sweep (resumable)
    python -m figures.fig_tofu_lr_sweep                                    # collapse epoch vs lr

For each (task, method, beta, lr, max_grad_norm) it unlearns the cpu preset's target with the
paper's AdamW recipe (10 epochs, batch 4, warm-up 1 epoch then linear decay, weight decay 0.01),
evaluating Model Utility and Forget Quality after every epoch exactly as the pipeline does, and
records the first epoch at which MU falls below half its initial value ("collapse_epoch", null if
never), the final MU (epoch 10) and the best FQ over the epochs whose MU is still at least half the
initial one ("best FQ at comparable utility", as in the claims table), plus per-epoch MU/FQ and the
mean gradient norm before clipping per epoch. To save time, epochs after the collapse epoch are
not evaluated except the last. Rows are appended to ``results/tofu_cpu/lr_sweep.json`` (rewritten atomically
after every run; a re-run skips rows already there). ``read_sweep`` validates the file.

The target, the data cut and the retain model's evaluation log are the pipeline's own stages,
found in ``--work`` by their stage names (``data-*``, ``target-*``, ``retain-eval-<task>-*``).
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from infra.cli import parser, run
from infra.files import write_json
from llm.tofu_claims import USABLE  # one definition of "comparable utility"

__all__ = ["SweepError", "read_sweep", "plan", "run_one", "collapse_epoch", "best_useful_fq",
           "ROW_KEYS", "main"]

PROG = "python -m llm lr-sweep"
DEFAULT_OUT = Path("results/tofu_cpu/lr_sweep.json")
ROW_KEYS = {"task": str, "method": str, "beta": (float, type(None)), "lr": float,
            "max_grad_norm": float, "collapse_epoch": (int, type(None)), "final_mu": float,
            "best_fq": (float, type(None))}
LRS = (3e-5, 1e-4, 2e-4, 3e-4, 1e-3, 3e-3)
BETAS = (0.1, 1.0)
RECIPE = dict(epochs=10, effective_batch=4, batch_size=4, warmup_epochs=1.0, weight_decay=0.01,
              seed=0, ds_size=20, max_new_tokens=40, eval_batch=32, template="llama2")


class SweepError(ValueError):
    """A missing or malformed sweep file / work folder: one line naming the fix."""


# ---- the file ------------------------------------------------------------------------------------

def read_sweep(path) -> dict:
    """The sweep document {"recipe", "rows": [...]}, validated; SweepError (one line) otherwise."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f"{path} not found; run python -m llm lr-sweep first")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno}); re-run "
                         f"python -m llm lr-sweep") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise SweepError(f"{path}: expected an object with a 'rows' list; re-run python -m llm lr-sweep")
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, dict):
            raise SweepError(f"{path}: row {i} is not an object; re-run python -m llm lr-sweep")
        for key, kind in ROW_KEYS.items():
            value = row.get(key, ...)
            if isinstance(value, int) and not isinstance(value, bool) and float in (
                    kind if isinstance(kind, tuple) else (kind,)):
                value = float(value)
            if value is ... or not isinstance(value, kind):
                raise SweepError(f"{path}: row {i} has no valid {key!r}; re-run python -m llm lr-sweep")
        if row["method"] not in ("GA", "NPO"):
            raise SweepError(f"{path}: row {i} has unknown method {row['method']!r} (GA or NPO)")
    return doc


def collapse_epoch(epochs, mu) -> int | None:
    """First epoch whose Model Utility is below half of epoch 0's; None if never."""
    if not mu:
        return None
    base = mu[0]
    for e, m in zip(epochs, mu):
        if e > 0 and m < USABLE * base:
            return int(round(e))
    return None


# ---- the plan and one run ------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    task: str
    method: str            # GA or NPO
    beta: float | None
    lr: float
    max_grad_norm: float

    def key(self) -> tuple:
        return (self.task, self.method, self.beta, float(self.lr), float(self.max_grad_norm))


def plan(lrs=LRS, betas=BETAS, tasks=("forget10", "forget05"), clips=(1.0, 0.0)) -> list[Spec]:
    """Every (task, method, beta, lr, clip), in order of priority so that a partial sweep is still
    useful: level = beta's rank (GA and the first beta: 0) + clip's rank (the first clip: 0); within
    a level the first task first, GA before NPO, then the lrs. Level 0 holds the calibration runs
    (GA, first task, first clip) and NPO's first beta beside them."""
    specs = [Spec(task, method, beta, lr, clip) for clip in clips for task in tasks
             for method, beta in [("GA", None)] + [("NPO", b) for b in betas] for lr in lrs]

    def key(s):
        rank = 0 if s.beta is None else betas.index(s.beta)
        return (rank + clips.index(s.max_grad_norm), tasks.index(s.task), clips.index(s.max_grad_norm),
                s.method != "GA", rank, lrs.index(s.lr))

    return sorted(specs, key=key)


@dataclass
class Inputs:
    data: Path
    target: Path
    retain_logs: dict          # task -> TOFU_EVAL.json of the retain model


def find_inputs(work, tasks) -> Inputs:
    work = Path(work)

    def one(pattern):
        found = sorted(p for p in work.glob(pattern) if (p.parent / "stage.json").exists()
                       or (p / "stage.json").exists() or p.name == "stage.json")
        if len(found) != 1:
            raise SweepError(f"{work}: expected one finished {pattern.split('/')[0]} stage, found "
                             f"{len(found)}; run the pipeline command in this module's docstring "
                             f"with --work {work} (or use a fresh --work)")
        return found[0]

    return Inputs(one("data-*/tofu"), one("target-*/model"),
                  {t: one(f"retain-eval-{t}-*/TOFU_EVAL.json") for t in tasks})


def run_one(spec: Spec, inputs: Inputs, scratch: Path, initial: dict) -> dict:
    """Unlearn with ``spec``; evaluate every epoch; return the row."""
    from llm.data import load_split
    from llm.evaluate import make_eval_fn
    from llm.train import TrainConfig
    from llm.unlearning import unlearn

    r = RECIPE
    n = len(load_split(spec.task, inputs.data))
    per_epoch = max(1, (r["epochs"] * n // r["effective_batch"]) // r["epochs"])
    evaluate = make_eval_fn(spec.task, data_dir=str(inputs.data), template=r["template"],
                            retain_logs=str(inputs.retain_logs[spec.task]), ds_size=r["ds_size"],
                            batch_size=r["eval_batch"], max_new_tokens=r["max_new_tokens"])
    evals = []

    def eval_fn(model, tok, step, epoch):
        # After the collapse epoch only the last epoch is evaluated (its MU is the final MU): the
        # evaluation is ~90% of a run's time and the rows need nothing from the epochs in between.
        collapsed = collapse_epoch([e for e, _ in evals], [s["model_utility"] for _, s in evals])
        if collapsed is not None and epoch < r["epochs"] - 1e-9:
            return {"skipped": "after collapse"}
        if step == 0 and spec.task in initial:  # the target's evaluation is the same for every run
            summary = initial[spec.task]
        else:
            summary = evaluate(model, tok, step, epoch)
            if step == 0:
                initial[spec.task] = summary
        evals.append((float(epoch), summary))
        return summary

    out = scratch / "run"
    cfg = TrainConfig(model=str(inputs.target), data_dir=str(inputs.data), forget=spec.task,
                      method="ga" if spec.method == "GA" else "npo", beta=spec.beta or 0.1,
                      lr=spec.lr, epochs=r["epochs"], effective_batch=r["effective_batch"],
                      batch_size=r["batch_size"], warmup_epochs=r["warmup_epochs"],
                      weight_decay=r["weight_decay"], max_grad_norm=spec.max_grad_norm,
                      seed=r["seed"], template=r["template"], ref_cache=str(scratch.parent / "refcache"),
                      eval_every=per_epoch, out=str(out), overwrite=True, device="cpu")
    start = time.perf_counter()
    unlearn(cfg, eval_fn=eval_fn)
    seconds = time.perf_counter() - start
    steps = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "grad_norm" in s]
    shutil.rmtree(out, ignore_errors=True)
    epochs = [e for e, _ in evals]
    mu = [s["model_utility"] for _, s in evals]
    fq = [s.get("forget_quality") for _, s in evals]
    grad = [sum(s["grad_norm"] for s in steps[k * per_epoch:(k + 1) * per_epoch]) / per_epoch
            for k in range(len(steps) // per_epoch)]
    return {"task": spec.task, "method": spec.method, "beta": spec.beta, "lr": float(spec.lr),
            "max_grad_norm": float(spec.max_grad_norm), "collapse_epoch": collapse_epoch(epochs, mu),
            "final_mu": float(mu[-1]), "best_fq": best_useful_fq(epochs, mu, fq),
            "initial_mu": float(mu[0]), "epochs": epochs, "mu": mu, "fq": fq,
            "grad_norm_by_epoch": grad, "forget_loss_last": steps[-1]["forget_loss"] if steps else None,
            "seconds": round(seconds, 1)}


def best_useful_fq(epochs, mu, fq):
    """The best Forget Quality over the epochs (after 0) whose MU is at least half the initial MU
    (as the claims table's "at comparable utility"); None if no such epoch has an FQ."""
    ok = [f for e, m, f in zip(epochs, mu, fq) if e > 0 and m >= USABLE * mu[0] and f is not None
          and math.isfinite(f)]
    return max(ok) if ok else None


def sweep(specs, inputs: Inputs, out_path: Path, log=print) -> dict:
    """Run every spec not yet in ``out_path``; rewrite the file after each run."""
    import torch
    torch.set_num_threads(1)
    doc = read_sweep(out_path) if out_path.exists() else {"recipe": RECIPE, "rows": []}
    for row in doc["rows"]:  # rows of an earlier version of this code: one definition of best FQ
        if "mu" in row:
            row["best_fq"] = best_useful_fq(row["epochs"], row["mu"], row["fq"])
    done = {(r["task"], r["method"], r["beta"], float(r["lr"]), float(r["max_grad_norm"]))
            for r in doc["rows"]}
    todo = [s for s in specs if s.key() not in done]
    initial: dict = {}
    with tempfile.TemporaryDirectory(dir=out_path.parent.parent if out_path.parent.parent.exists()
                                     else None) as tmp:
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        for k, spec in enumerate(todo, 1):
            row = run_one(spec, inputs, scratch, initial)
            doc["rows"].append(row)
            write_json(out_path, doc)
            log(f"[{k}/{len(todo)}] {spec.task} {spec.method} beta={spec.beta} lr={spec.lr:g} "
                f"clip={spec.max_grad_norm:g}: collapse epoch {row['collapse_epoch']}, final MU "
                f"{row['final_mu']:.3f}, best FQ {row['best_fq']}, {row['seconds']} s", flush=True)
    return doc


# ---- command line --------------------------------------------------------------------------------

def build_parser():
    p = parser(PROG, __doc__, json=False)
    p.add_argument("--work", default="results/work/tofu_cpu", help="the cpu pipeline's work folder")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="sweep file (rows are appended)")
    p.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    p.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    p.add_argument("--tasks", nargs="+", default=["forget10", "forget05"])
    p.add_argument("--clips", type=float, nargs="+", default=[1.0, 0.0], help="max grad norms (0: off)")
    p.add_argument("--methods", nargs="+", default=["GA", "NPO"])
    p.add_argument("--limit", type=int, default=None, help="run at most N new rows")
    return p


def main(argv=None) -> int:
    return run(PROG, _main, build_parser().parse_args(argv))   # SweepError is a ValueError


def _main(args) -> int:
    if not all(lr > 0 for lr in args.lrs) or not all(b > 0 for b in args.betas):
        raise SweepError("--lrs and --betas must be > 0")
    if any(c < 0 for c in args.clips) or set(args.methods) - {"GA", "NPO"}:
        raise SweepError("--clips must be >= 0 and --methods GA and/or NPO")
    inputs = find_inputs(args.work, args.tasks)
    specs = [s for s in plan(tuple(args.lrs), tuple(args.betas), tuple(args.tasks), tuple(args.clips))
             if s.method in args.methods]
    out = Path(args.out)
    if out.exists():
        read_sweep(out)
    if args.limit is not None:
        done = {(r["task"], r["method"], r["beta"], float(r["lr"]), float(r["max_grad_norm"]))
                for r in (read_sweep(out)["rows"] if out.exists() else [])}
        specs = [s for s in specs if s.key() in done] + \
            [s for s in specs if s.key() not in done][:args.limit]
    sweep(specs, inputs, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
