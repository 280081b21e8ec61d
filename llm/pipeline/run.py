"""The TOFU experiments end to end: fine-tune, unlearn with every method, evaluate every epoch.

    python -m llm pipeline --preset cpu                                        # minutes, 2 CPU cores
    python -m llm pipeline --preset gpu --data-dir DIR --tasks forget10 \\
        --methods GA GA+RT NPO NPO+RT --out results/tofu_gpu                     # one GPU
    python -m llm pipeline --preset paper --model /path/Llama-2-7b-chat-hf --data-dir ...
    python -m figures                                                          # figures from the logs

Stages (each in ``<work>/<name>-<hash>/``, finished when its ``stage.json`` exists):
  data          a prepared TOFU folder: the preset's QA-per-author subset (llm/pipeline/subset.py) and
                forgetNN_perturbed proxies = forget10_perturbed for NN not in 01/05/10 (the paper's
                own proxy for forget20..90)
  target        fine-tune ``--model`` on ``full``
  retainNN      fine-tune the same base on ``retainNN`` (Forget Quality's reference), one per task
  retain-eval   the retain model's TOFU_EVAL.json on the task's forget set
  initial       the target's evaluation (step 0 of every run of the task) and sample answers
  run           one (task, method, seed, knobs) unlearning run, evaluated every epoch
  attacks       with --attacks: relearning and int4 on each main-grid run's final and best-FQ models
                (llm/pipeline/best_fq.py keeps the latter), the target and the retain model, per task
Each stage's hash covers its config, the hashes of the stages it reads, the TOFU files' bytes and
the code that produces it (infra/codehash.py: the stage function's source and the project modules
it reaches, ``stage_code``), so an interrupted or re-run pipeline skips what is unchanged and redoes
only what depends on a change (``--force`` redoes everything); a stage whose files were deleted is
redone. The training stages (target, retainNN, run) also key on ``training_env``: torch /
transformers versions, the device and the strategy. The IDK-style runs (IDK+RT, DPO+RT, KTO+RT) key on
the packaged refusal list too. Fine-tuning imports neither the unlearning losses nor the metrics
(llm/train/loop.py), so a metric fix re-evaluates without re-training. Models live in ``--work``;
``--out`` only gets the logs.

Modules: llm/pipeline/plan.py (presets, the run grid), this file (the stages' order and what they
read from each other), llm/pipeline/stages.py (what each stage computes, the code its key hashes),
llm/pipeline/logs.py (the result schema, log compaction), llm/pipeline/environment.py (device, versions),
llm/pipeline/cli.py (``python -m llm pipeline``), infra/stages.py (the content-hashed stage runner).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from infra.files import write_json, write_jsonl, write_text
from infra.stages import Stages
from llm.pipeline.environment import device_name, main_rank, resolve_device, versions
from llm.pipeline.logs import SCHEMA, compact, mark_progress, prune
from llm.pipeline.plan import PAPER_GRID, TASKS, Preset, RunSpec, plan_runs, steps_per_epoch
from llm.pipeline.stages import (attack, eval_initial, eval_retain, finetune_model, load_items, stage_code,
                                 unlearn_run)

__all__ = ["Options", "run_pipeline", "stage_code", "training_env"]

ATTACK_STEPS = 10  # --attacks: relearning steps, at the fine-tuning lr


@dataclass
class Options:
    preset_name: str
    preset: Preset
    data_dir: Path
    out: Path
    work: Path
    device: str = "auto"
    extras: bool = True
    force: bool = False
    keep_models: bool = False
    strategy: str | None = None      # None: the trainer's default (ddp, or accelerate's fsdp)
    attacks: bool = False            # relearning + int4 on each main-grid run's final and best-FQ models


def training_env(o: Options) -> dict:
    """What a training stage's result depends on besides its config, data and code: library
    versions, the device and the multi-process strategy (part of every training stage's key)."""
    from llm.train import distributed
    return {"versions": versions(), "device": device_name(o.device),
            "strategy": o.strategy or distributed.default_strategy()}



def _hparams(spec: RunSpec, p: Preset) -> dict:
    """A run's hyper-parameters (part of its stage key and meta row): for the paper's grid the
    preset's recipe (its beta, or the run's for NPO's beta runs; forget weight 1; the run's retain
    weight), else the method's defaults (llm/train/methods/), then --hp (``p.hparams``) where the method
    declares the name, and the run's retain weight."""
    if spec.method in PAPER_GRID:
        return {"beta": spec.beta_in(p), "forget_weight": 1.0, "retain_weight": spec.retain_weight}
    from llm.train.methods import by_label
    method = by_label(spec.method)
    hp = {**method.hparams, **{k: v for k, v in p.hparams.items() if k in method.hparams}}
    hp.update({k: v for k, v in (("beta", spec.beta), ("retain_weight", spec.retain_weight))
               if k in hp and v is not None})
    return hp


def check_attacks_strategy(attacks: bool, strategy: str | None) -> None:
    """``--attacks`` keeps each run's best-FQ model from rank 0's whole copy (llm/pipeline/best_fq.py);
    under FSDP no rank holds one, so it is refused (``strategy`` None: the launcher's default)."""
    from llm.pipeline.plan import PipelineError
    from llm.train.distributed import default_strategy
    if attacks and (strategy or default_strategy()) == "fsdp":
        raise PipelineError("--attacks does not run under --strategy fsdp (keeping each run's best-FQ "
                            "model would gather the sharded model at every improvement); use --strategy "
                            "ddp or one process")


def run_pipeline(o: Options, log=print) -> dict:
    """Run (or resume) every stage; write the result logs to ``o.out``; return the manifest."""
    import torch

    from llm.train import distributed
    from llm.pipeline import subset as pipeline_data

    p = o.preset
    check_attacks_strategy(o.attacks, o.strategy)
    if p.threads:
        torch.set_num_threads(p.threads)
    stages = distributed.RankedStages(Stages(o.work, o.force, log))
    src_hash = pipeline_data.content_hash(o.data_dir)
    # Every task's splits are written whatever the plan, so the data (and the fine-tunes that read
    # it) hash the same for any --tasks / --methods choice and are shared between such runs.
    retain_splits = sorted({f"retain{100 - int(t[6:]):02d}" for t in TASKS} | set(p.retain_for.values()))

    def prepare(path):
        counts = pipeline_data.write_subset(o.data_dir, path / "tofu", p.qa_per_author, TASKS,
                                            retain_splits)
        ft = pipeline_data.write_finetune_dir(path / "tofu", path / "finetune", p.world_knowledge,
                                              ["full"] + retain_splits)
        return {"eval": counts, "finetune": ft}

    data_stage = stages.run("data", {"qa_per_author": p.qa_per_author, "world": p.world_knowledge,
                                     "source": src_hash}, [], prepare)
    data = data_stage["path"] / "tofu"
    ft_data = data_stage["path"] / "finetune"
    from llm.models import weights_identity
    env = training_env(o)
    base = {"model": p.model, "template": p.template, "seed": p.seed, "precision": p.precision,
            "recipe": dataclasses.asdict(p.finetune), "checkpointing": p.gradient_checkpointing,
            "env": env, **weights_identity(p.model)}   # a GGUF behind "smol": its content, not its name
    target = stages.run("target", base, [data_stage["hash"]], partial(finetune_model, o, "full", ft_data),
                        code=stage_code("finetune"), collective=True)
    eval_cfg = {"ds_size": p.ds_size, "max_new_tokens": p.max_new_tokens, "template": p.template,
                "n_samples": p.n_samples, "sample_tokens": p.sample_tokens,
                **({"numerics": p.numerics} if p.numerics != "exact" else {})}
    manifest = {"schema": SCHEMA, "preset": o.preset_name, "device": env["device"],
                "versions": env["versions"], "config": _jsonable_preset(p),
                "data": data_stage["info"], "target": target["info"], "retain": {}, "runs": []}
    runs_by_task: dict[str, list[RunSpec]] = {}
    for spec in plan_runs(p, o.extras):
        runs_by_task.setdefault(spec.task, []).append(spec)
    planned = [spec.id for task in p.tasks for spec in runs_by_task.get(task, [])]
    mark_progress(manifest, planned)
    for task in p.tasks:
        retain_split = p.retain_split(task)
        retain = stages.run(retain_split, {**base, "split": retain_split}, [data_stage["hash"]],
                            partial(finetune_model, o, retain_split, ft_data), code=stage_code("finetune"),
                            collective=True)
        retain_eval = stages.run(f"retain-eval-{task}", eval_cfg, [retain["hash"], data_stage["hash"]],
                                 partial(eval_retain, o, data, retain["path"], task),
                                 code=stage_code("retain-eval"))
        retain_log = str(retain_eval["path"] / "TOFU_EVAL.json")
        manifest["retain"][task] = {"split": retain_split, "summary": retain_eval["info"]["summary"],
                                    "finetune": retain["info"]}
        initial = stages.run(f"initial-{task}", eval_cfg, [target["hash"], retain_eval["hash"]],
                             partial(eval_initial, o, data, target["path"], task, retain_log),
                             code=stage_code("initial"))
        initial_row = json.loads((initial["path"] / "row.json").read_text())
        n_forget = len(load_items(data, task))
        attacked = []
        for spec in runs_by_task.get(task, []):
            knobs = {**_hparams(spec, p), "rt_weight": spec.rt_weight, "lr": p.unlearn.lr, "epochs": p.unlearn.epochs,
                     "effective_batch": p.unlearn.effective_batch}
            if spec.max_grad_norm is not None:
                knobs["max_grad_norm"] = spec.max_grad_norm
            spe = steps_per_epoch(n_forget, p.unlearn)
            do_run = partial(unlearn_run, o, data, target["path"], spec, knobs, spe, retain_log,
                             initial_row, n_forget)
            # --attacks keeps models (the best-FQ one too): a key of its own, so a run without it is reused
            keep = {"keep": ["final", "best_fq"]} if o.attacks and not spec.tag else {}
            stage = stages.run(f"run-{spec.id}", {"spec": dataclasses.asdict(spec), "knobs": knobs,
                                                  "recipe": dataclasses.asdict(p.unlearn), **eval_cfg,
                                                  "kl_items": p.kl_items, "env": env, **keep},
                               [target["hash"], retain_eval["hash"], data_stage["hash"]], do_run,
                               code=stage_code("run", spec.method), collective=True)
            rows = [json.loads(r) for r in (stage["path"] / "run.jsonl").read_text().splitlines()]
            rows[0]["stage"] = stage["hash"]
            manifest["runs"].append({"id": spec.id, "task": task, "method": spec.method,
                                     "seed": spec.seed, "knobs": knobs, "tag": spec.tag,
                                     "log": f"runs/{spec.id}.jsonl"})
            if main_rank():
                write_jsonl(o.out / "runs" / f"{spec.id}.jsonl", compact(rows))
                write_json(o.out / "manifest.json", mark_progress(manifest, planned))  # after every run
            if o.attacks and not spec.tag:
                last = max((r["step"] for r in rows if r.get("event") == "eval"), default=None)
                attacked.append((spec, stage, rows[0].get("best_fq"), last))
        if o.attacks and attacked:
            _attacks_stage(o, stages, task, data, target, retain, retain_eval, attacked)
    if main_rank():
        prune(o.out, manifest)
        write_json(o.out / "manifest.json", mark_progress(manifest, planned))
    return manifest


def best_fq_path(best: dict, last_step: int, run_path: Path, target_model: str) -> str:
    """The folder of a run's best-FQ model (its meta row's ``best_fq``): the target's when that was
    step 0; the final model's when it was the last evaluation (one folder, so attack_models attacks
    it once and the best-FQ entry says "same_as" the final one); else the copy KeepBestFQ kept."""
    if best["model"] == "target":
        return target_model
    return str(run_path / ("model" if best["step"] == last_step else best["model"]))


def _attacks_stage(o: Options, stages, task, data, target, retain, retain_eval, attacked) -> None:
    """Both attacks (llm/studies/attacks.py) on two models of each main-grid run of ``task``: the
    final one and the one of its evaluation with the highest Forget Quality (kept by
    llm/pipeline/best_fq.py; the target itself when that is step 0), with the target and the retain
    model (the relearning baseline) as references. Writes ``<out>/attacks/<task>_attacks.json``."""
    from llm.pipeline.plan import PipelineError
    from llm.studies.relearn import RelearnConfig
    p = o.preset
    seeds = {spec.seed for spec, *_ in attacked}
    target_model = str(target["path"] / "model")
    models = {}
    for spec, stage, best, last_step in attacked:
        model = stage["path"] / "model"
        if not (model / "config.json").exists():
            raise PipelineError(f"{stage['path'].name} kept no final model (it ran without --attacks); "
                                f"rerun with --attacks and a fresh --work, or --force")
        if best is None:
            raise PipelineError(f"{spec.id}: no evaluation had a finite Forget Quality, so there is no "
                                f"best-FQ model to attack; check the retain evaluation "
                                f"({retain_eval['path']}) or run without --attacks")
        name = spec.method if len(seeds) == 1 else f"{spec.method} s{spec.seed}"
        common = {"method": spec.method, "seed": spec.seed, "run": spec.id}
        models[f"{name} final"] = {"path": str(model), "variant": "final", **common}
        best_path = best_fq_path(best, last_step, stage["path"], target_model)
        if not (Path(best_path) / "config.json").exists():
            raise PipelineError(f"{best_path}: the best-FQ model of {spec.id} is missing; rerun with --force")
        models[f"{name} best-FQ"] = {"path": best_path, "variant": "best_fq", **common,
                                     **{k: best[k] for k in ("step", "epoch", "forget_quality", "model")}}
    n_forget = len(load_items(data, task))
    # Forget Quality per half needs the retain log over every forget item
    retain_log = str(retain_eval["path"] / "TOFU_EVAL.json") if (p.ds_size or n_forget) >= n_forget else None
    cfg = RelearnConfig(model="", forget=task, split="first_half", steps=ATTACK_STEPS,
                        lr=p.finetune.lr, batch_size=min(p.unlearn.batch_size, n_forget // 2),
                        eval_every=max(1, ATTACK_STEPS // 5), seed=p.seed, retain_logs=retain_log,
                        fq=retain_log is not None, data_dir=str(data), template=p.template,
                        max_new_tokens=p.max_new_tokens, eval_batch_size=p.eval_batch,
                        device=resolve_device(o.device), qa_per_author=p.qa_per_author)
    config = {"relearn": dataclasses.asdict(cfg) | {"data_dir": None}, "schemes": ["int4"],
              "group_size": 128, "ds_size": p.ds_size,   # models: where they lie is no setting
              "models": {n: {k: v for k, v in m.items() if k != "path"} for n, m in sorted(models.items())}}
    do_attacks = partial(attack, models, target_model, str(retain["path"] / "model"),
                         cfg, p.ds_size, str(retain_eval["path"] / "TOFU_EVAL.json"))
    stage = stages.run(f"attacks-{task}", config, [target["hash"], retain_eval["hash"]] +
                       [s["hash"] for _, s, *_ in attacked], do_attacks, code=stage_code("attacks"))
    if main_rank():   # every rank ran the stage; one writes the result, atomically
        write_text(o.out / "attacks" / f"{task}_attacks.json", (stage["path"] / "attacks.json").read_text())


def _jsonable_preset(p: Preset) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(p)))
