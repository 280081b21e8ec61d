"""Where does NPO's advantage over GA hold? A learning-rate sweep on a TOFU pipeline's target.

    python -m llm pipeline --preset cpu                                     # target, retain models, data
    python -m llm lr-sweep [--pipeline results/tofu_cpu --work results/work/tofu_cpu]   # resumable
    python -m figures.fig_tofu_lr_sweep                                     # collapse epoch vs lr

For each (task, method, beta, lr, max_grad_norm) it unlearns the pipeline's target with the
pipeline's unlearning recipe (the manifest's preset: epochs, batch, warm-up then linear decay,
weight decay, evaluation settings; seed 0), evaluating Model Utility and Forget Quality after every
epoch exactly as the pipeline does, and records the first epoch at which MU falls below half its
initial value ("collapse_epoch", null if never), the final MU (last epoch) and the best FQ over the
epochs whose MU is still at least half the initial one ("best FQ at comparable utility", as in the
claims table), plus per-epoch MU/FQ and the mean gradient norm before clipping per epoch. To save
time, epochs after the collapse epoch are not evaluated except the last.

Inputs come from the pipeline's ``--pipeline`` folder: its ``manifest.json`` lists a run per task,
whose log names its stage (``"stage"``); that stage's ``stage.json`` in ``--work`` lists the hashes
of the stages it read (the target model, the retain model's evaluation log, the data), each in
``<work>/<name>-<hash>/``. Each row is a content-hashed stage of its own in ``--work``
(infra/stages.py, ``sweep-...``), keyed by the row's settings, the recipe, the hashes of those
inputs and the code that produces it (``run_one`` and the modules it reaches), so a re-run skips
finished rows and an edit of the training or evaluation code re-runs them. The target's
evaluation (step 0, the same for every row of a task) is a stage too (``sweepinit-<task>``).
``--out`` (default ``results/tofu_cpu/lr_sweep.json``) is rewritten atomically after every row
with the finished rows of the requested grid, in grid order. ``read_sweep`` validates the file
(the grid and the file: llm/studies/lr_sweep_grid.py).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from infra.cli import parser, run
from infra.files import write_json
from infra.stages import Stages
from llm.studies.lr_sweep_grid import (BETAS, DEFAULT_OUT, LRS, ROW_KEYS, Spec, SweepError, best_useful_fq,
                               collapse_epoch, grid, read_sweep)

__all__ = ["SweepError", "read_sweep", "grid", "find_inputs", "recipe_from", "run_one",
           "evaluate_initial", "collapse_epoch", "best_useful_fq", "sweep", "ROW_KEYS", "main"]

PROG = "python -m llm lr-sweep"
SEED = 0


# ---- one run -------------------------------------------------------------------------------------


@dataclass
class SweepInputs:
    data: Path
    target: Path
    retain_logs: dict          # task -> TOFU_EVAL.json of the retain model
    hashes: dict               # {"data", "target", "retain_eval": {task: hash}}: the stages read
    config: dict               # the pipeline preset, from the manifest


def _rerun(pipeline, work) -> str:
    return (f"run python -m llm pipeline with --out {pipeline} --work {work} (the sweep reads that "
            f"pipeline's manifest and stages)")


def find_inputs(pipeline, work, tasks) -> SweepInputs:
    """The target, data and retain evaluation logs the pipeline in ``pipeline`` (its --out) used,
    through its manifest and the stage records in ``work`` (its --work); SweepError otherwise."""
    pipeline, work = Path(pipeline), Path(work)
    path = pipeline / "manifest.json"
    if not path.exists():
        raise SweepError(f"{path} not found; {_rerun(pipeline, work)}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path}: malformed JSON ({exc.msg}); {_rerun(pipeline, work)}") from None

    def stage(name, h):
        folder = work / f"{name}-{h}"
        if not (folder / "stage.json").exists():
            raise SweepError(f"{folder} is missing or unfinished; {_rerun(pipeline, work)}")
        return folder

    found: dict = {}
    retain_logs, retain_hashes = {}, {}
    for task in tasks:
        run_ = next((r for r in manifest.get("runs", []) if r.get("task") == task), None)
        if run_ is None:
            raise SweepError(f"{path} lists no run of {task}; add --tasks {task} to the pipeline "
                             f"(--out {pipeline} --work {work})")
        log = pipeline / run_["log"]
        if not log.exists():
            raise SweepError(f"{log} not found; {_rerun(pipeline, work)}")
        meta = json.loads(log.read_text().splitlines()[0])
        record = json.loads((stage(f"run-{run_['id']}", meta["stage"]) / "stage.json").read_text())
        hashes = record["inputs"]
        for name in ("data", "target"):   # the same for every task: one of them must match
            folder = next((work / f"{name}-{h}" for h in hashes
                           if (work / f"{name}-{h}" / "stage.json").exists()), None)
            if folder is None or found.setdefault(name, folder) != folder:
                raise SweepError(f"{work}: the {name} stage of {task}'s run is missing or differs "
                                 f"from another task's; {_rerun(pipeline, work)}")
        h = next((h for h in hashes if (work / f"retain-eval-{task}-{h}" / "stage.json").exists()),
                 None)
        if h is None:
            raise SweepError(f"{work}: the retain-eval-{task} stage is missing; {_rerun(pipeline, work)}")
        retain_logs[task], retain_hashes[task] = stage(f"retain-eval-{task}", h) / "TOFU_EVAL.json", h
    if not found:
        raise SweepError("--tasks names no task")
    return SweepInputs(found["data"] / "tofu", found["target"] / "model", retain_logs,
                  {"data": found["data"].name.rsplit("-", 1)[1],
                   "target": found["target"].name.rsplit("-", 1)[1], "retain_eval": retain_hashes},
                  manifest["config"])


def recipe_from(config: dict) -> dict:
    """The sweep's training and evaluation settings: the pipeline preset's unlearning recipe."""
    u = config["unlearn"]
    return dict(epochs=u["epochs"], effective_batch=u["effective_batch"], batch_size=u["batch_size"],
                warmup_epochs=u["warmup_epochs"], weight_decay=u["weight_decay"], seed=SEED,
                ds_size=config["ds_size"], max_new_tokens=config["max_new_tokens"],
                eval_batch=config["eval_batch"], template=config["template"],
                numerics=config.get("numerics", "exact"), precision=config["precision"],
                gradient_checkpointing=config["gradient_checkpointing"])


def _eval_fn(task: str, inputs: SweepInputs, r: dict):
    from llm.evaluate.scoring import make_eval_fn
    return make_eval_fn(task, data_dir=str(inputs.data), template=r["template"],
                        retain_logs=str(inputs.retain_logs[task]), ds_size=r["ds_size"],
                        batch_size=r["eval_batch"], max_new_tokens=r["max_new_tokens"],
                        numerics=r["numerics"])


def evaluate_initial(task: str, inputs: SweepInputs, r: dict) -> dict:
    """The target's evaluation summary on ``task`` (every row's epoch 0)."""
    from llm.models import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(str(inputs.target), device="cpu")
    model.eval()
    return _eval_fn(task, inputs, r)(model, tok, 0, 0.0)


def run_one(spec: Spec, inputs: SweepInputs, r: dict, scratch: Path, initial: dict, ref_cache: Path) -> dict:
    """Unlearn with ``spec`` and recipe ``r``; evaluate every epoch (epoch 0: ``initial``); the row."""
    from llm.data.tofu import load_split
    from llm.pipeline.plan import Recipe, steps_per_epoch
    from llm.train.loop import TrainConfig
    from llm.train.unlearning import unlearn

    n = len(load_split(spec.task, inputs.data))
    per_epoch = steps_per_epoch(n, Recipe(epochs=r["epochs"], lr=spec.lr,
                                          effective_batch=r["effective_batch"],
                                          batch_size=r["batch_size"]))
    evaluate = _eval_fn(spec.task, inputs, r)
    evals = []

    def eval_fn(model, tok, step, epoch):
        # After the collapse epoch only the last epoch is evaluated (its MU is the final MU): the
        # evaluation is ~90% of a run's time and the rows need nothing from the epochs in between.
        collapsed = collapse_epoch([e for e, _ in evals], [s["model_utility"] for _, s in evals])
        if collapsed is not None and epoch < r["epochs"] - 1e-9:
            return {"skipped": "after collapse"}
        summary = initial if step == 0 else evaluate(model, tok, step, epoch)
        evals.append((float(epoch), summary))
        return summary

    out = scratch / "run"
    cfg = TrainConfig(model=str(inputs.target), data_dir=str(inputs.data), forget=spec.task,
                      method="ga" if spec.method == "GA" else "npo", beta=spec.beta or 0.1,
                      lr=spec.lr, epochs=r["epochs"], effective_batch=r["effective_batch"],
                      batch_size=r["batch_size"], warmup_epochs=r["warmup_epochs"],
                      weight_decay=r["weight_decay"], max_grad_norm=spec.max_grad_norm,
                      seed=r["seed"], template=r["template"], precision=r["precision"],
                      gradient_checkpointing=r["gradient_checkpointing"],
                      eval_batch_size=r["eval_batch"], ref_cache=str(ref_cache),
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


def _stage_name(spec: Spec) -> str:
    beta = "" if spec.beta is None else f"-b{spec.beta:g}"
    return f"sweep-{spec.task}-{spec.method.lower()}{beta}-lr{spec.lr:g}-clip{spec.max_grad_norm:g}"


def sweep(specs, inputs: SweepInputs, work: Path, out_path: Path, force: bool = False, log=print) -> dict:
    """Run (or find finished) every spec as a stage in ``work``; rewrite ``out_path`` after each
    with the rows finished so far, in grid order (an interrupted sweep resumes where it stopped)."""
    import torch
    if inputs.config.get("threads"):
        torch.set_num_threads(inputs.config["threads"])
    r = recipe_from(inputs.config)
    stages = Stages(work, force=force, log=log)
    doc = {"recipe": r, "inputs": inputs.hashes, "rows": []}
    initial: dict = {}
    for spec in specs:
        task_inputs = [inputs.hashes["target"], inputs.hashes["retain_eval"][spec.task],
                       inputs.hashes["data"]]
        if spec.task not in initial:
            initial[spec.task] = stages.run(
                f"sweepinit-{spec.task}", {"task": spec.task, "recipe": r}, task_inputs,
                lambda path, task=spec.task: evaluate_initial(task, inputs, r), code=evaluate_initial)
        init = initial[spec.task]
        settings = {"task": spec.task, "method": spec.method, "beta": spec.beta, "lr": float(spec.lr),
                    "max_grad_norm": float(spec.max_grad_norm)}
        stage = stages.run(_stage_name(spec), {**settings, "recipe": r}, [*task_inputs, init["hash"]],
                           lambda path, spec=spec: run_one(spec, inputs, r, path, init["info"],
                                                           work / "refcache"), code=run_one)
        row = stage["info"]
        doc["rows"].append({**row, "stage": stage["hash"]})
        write_json(out_path, doc)
        log(f"{_stage_name(spec)}: collapse epoch {row['collapse_epoch']}, final MU "
            f"{row['final_mu']:.3f}, best FQ {row['best_fq']}")
    write_json(out_path, doc)
    return doc


# ---- command line --------------------------------------------------------------------------------

def build_parser():
    p = parser(PROG, __doc__, json=False)
    p.add_argument("--pipeline", default="results/tofu_cpu",
                   help="the pipeline's --out folder (its manifest.json names the inputs)")
    p.add_argument("--work", default="results/work/tofu_cpu",
                   help="the pipeline's --work folder (its stages; the sweep's stages go there too)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="sweep file (rewritten after every row)")
    p.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    p.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    p.add_argument("--tasks", nargs="+", default=["forget10", "forget05"])
    p.add_argument("--clips", type=float, nargs="+", default=[1.0, 0.0], help="max grad norms (0: off)")
    p.add_argument("--methods", nargs="+", default=["GA", "NPO"])
    p.add_argument("--force", action="store_true", help="redo every row")
    return p


def main(argv=None) -> int:
    return run(PROG, _main, build_parser().parse_args(argv))   # SweepError is a ValueError


def _main(args) -> int:
    if not all(math.isfinite(v) and v > 0 for v in args.lrs + args.betas):
        raise SweepError("--lrs and --betas must be finite and > 0")
    if not all(math.isfinite(c) and c >= 0 for c in args.clips) or set(args.methods) - {"GA", "NPO"}:
        raise SweepError("--clips must be finite and >= 0 and --methods GA and/or NPO")
    out = Path(args.out)
    if out.is_dir():
        raise SweepError(f"--out {out} is a folder; name a .json file")
    inputs = find_inputs(args.pipeline, args.work, args.tasks)
    specs = [s for s in grid(tuple(args.lrs), tuple(args.betas), tuple(args.tasks), tuple(args.clips))
             if s.method in args.methods]
    sweep(specs, inputs, Path(args.work), out, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
