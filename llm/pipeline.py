"""The TOFU experiments end to end: fine-tune, unlearn with every method, evaluate every epoch.

    python -m llm pipeline --preset cpu --data-dir ../shared/tofu              # minutes, 2 CPU cores
    python -m llm pipeline --preset gpu --data-dir ../shared/tofu --tasks forget10 \\
        --methods GA GA+RT NPO NPO+RT --out results/tofu_gpu                     # one GPU
    python -m llm pipeline --preset paper --model /path/Llama-2-7b-chat-hf --data-dir ...
    python -m figures                                                          # figures from the logs

Stages (each in ``<work>/<name>-<hash>/``, finished when its ``stage.json`` exists):
  data          a prepared TOFU folder: the preset's QA-per-author subset (llm/pipeline_data.py) and
                forgetNN_perturbed proxies = forget10_perturbed for NN not in 01/05/10 (the paper's
                own proxy for forget20..90)
  target        fine-tune ``--model`` on ``full``
  retainNN      fine-tune the same base on ``retainNN`` (Forget Quality's reference), one per task
  retain-eval   the retain model's TOFU_EVAL.json on the task's forget set
  initial       the target's evaluation (step 0 of every run of the task) and sample answers
  run           one (task, method, seed, knobs) unlearning run, evaluated every epoch
Each stage's hash covers its config, the hashes of the stages it reads and the TOFU files' bytes,
so an interrupted or re-run pipeline skips what is unchanged and redoes only what depends on a
change (``--force`` redoes everything). Models live in ``--work``; ``--out`` only gets the logs.

Result schema (``--out``, default ``results/tofu_<preset>``; read by ``figures/tofu_results.py``):
  manifest.json  {"schema": 1, "preset", "device", "versions", "config": {...}, "data": {file: n},
                  "target": {...}, "retain": {task: {"summary": ...}},
                  "runs": [{"id", "task", "method", "seed", "knobs", "tag", "log"}, ...]}
  runs/<id>.jsonl, one JSON object per line:
    {"event": "meta", "id", "task", "method" (GA, GA+RT, GA+KL, IDK+RT, DPO+RT, KTO+RT, NPO, NPO+RT,
     NPO+KL), "method_key" (llm.losses name), "seed", "knobs": {"beta", "forget_weight",
     "retain_weight", "rt_weight" (the retain weight of +RT methods, else 0), "lr", "epochs",
     "effective_batch"}, "tag" ("" = main grid; "rt_weight" = a Fig. 8 / Fig. 11 RT-weight run),
     "steps_per_epoch", "n_forget", "stage", "train_seconds", "train_steps", "eval_seconds",
     "peak_train_bytes"}
    {"event": "eval", "step", "epoch", "summary": {llm.evaluate summary: model_utility,
     forget_quality, forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE and the nine Model
     Utility components ...}, "kl": {"forget": x, "real_world": y} (KL(initial || current) per
     answer token), "samples": [{"set", "question", "answer", "generated"}], "eval_seconds",
     "eval_items"}   one per epoch (per step on forget01); step 0 is the target model.
    {"event": "train", "step", "epoch", "lr", "loss", "forget_loss", "retain_loss", "grad_norm"}
     llm.train's per-step rows (at most 200 per run: every k-th step and the last).
  Floats are rounded to 6 significant digits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from figures.io import config_hash, write_json, write_jsonl

#: Version of each stage kind's code (the name up to its first "-"; 1 where absent). Bump one when
#: that stage's code changes what it writes: its stages and their dependents are then redone.
STAGE_VERSIONS = {"run": 2}
SCHEMA = 1
#: Display name -> llm.losses method key.
METHODS = {"GA": "ga", "GA+RT": "ga_rt", "GA+KL": "ga_kl", "IDK+RT": "idk_rt", "DPO+RT": "dpo_rt",
           "KTO+RT": "kto_rt", "NPO": "npo", "NPO+RT": "npo_rt", "NPO+KL": "npo_kl"}
TASKS = ("forget01", "forget05", "forget10", "forget20", "forget30", "forget50", "forget90")
#: The paper's RT weights for NPO+RT on the largest forget sets (Fig. 8).
LARGE_RT = {"forget50": 5.0, "forget90": 12.0}


class PipelineError(ValueError):
    """A user-fixable pipeline problem: one line naming the fix."""


@dataclass
class Recipe:
    """One training recipe (llm.train.TrainConfig fields)."""
    epochs: int
    lr: float
    effective_batch: int
    batch_size: int
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01


@dataclass
class Preset:
    model: str
    finetune: Recipe
    unlearn: Recipe
    tasks: tuple = ("forget01", "forget05", "forget10")
    methods: tuple = tuple(METHODS)
    seeds: tuple = (0,)
    qa_per_author: int = 20          # < 20: the consistent subset of llm/pipeline_data.py
    ds_size: int | None = None       # eval items per set (None: all, as open-unlearning)
    eval_batch: int = 32
    max_new_tokens: int = 200
    n_samples: int = 2               # sample answers stored per set and evaluation
    sample_tokens: int = 48
    kl_items: int = 100
    rt_ablation: tuple = (2.0, 5.0)  # extra NPO+RT RT weights on forget10 (Fig. 11)
    large_rt: dict = field(default_factory=lambda: dict(LARGE_RT))
    beta: float = 0.1
    template: str = "llama2"
    seed: int = 42                   # initialisation / data order of the fine-tunes
    precision: str = "auto"
    gradient_checkpointing: bool = False
    world_knowledge: int = 0         # real-author / world-fact QA pairs of each learned when
                                     # fine-tuning (from-scratch models; pipeline_data.py)
    threads: int | None = None       # torch CPU threads (1 avoids oversubscription on shared cores)
    #: per-task method lists overriding ``methods`` (an empty tuple: only the extra RT-weight runs)
    task_methods: dict = field(default_factory=dict)
    #: per-task retain split used as Forget Quality's reference (default: the task's complement).
    #: Any retain split disjoint from the forget set is a model that never saw it; sharing one
    #: across tasks saves fine-tunes at small scale.
    retain_for: dict = field(default_factory=dict)

    def methods_for(self, task: str) -> tuple:
        return tuple(self.task_methods.get(task, self.methods))

    def retain_split(self, task: str) -> str:
        return self.retain_for.get(task, f"retain{100 - int(task[len('forget'):]):02d}")


PRESETS = {
    # A ~1M-parameter Llama trained from scratch on 2 QA pairs per author (400 pairs) plus 20
    # real-author and 20 world-fact pairs: forget01 / 05 / 10 keep 2 / 10 / 20 authors (4 / 20 / 40
    # items) and batch 4 keeps the paper's 1 / 5 / 10 optimizer steps per epoch. Evaluation on the
    # first 20 items per set. Cut to fit minutes on 2 shared cores: one seed; 4 methods on
    # forget01/05, all 9 on forget10, NPO+RT only on forget50/90; retain90 is the reference model
    # of forget01/05/10 and retain10 of forget50/90. Unlearning lr 3e-4: at 1e-4 GA did not
    # collapse on forget05 within 10 epochs (it did on forget10 at epoch 8); at 3e-4 it collapses
    # on forget10 at epoch 3 (measured on this preset's target model).
    "cpu": Preset(model="tiny", finetune=Recipe(epochs=15, lr=3e-3, effective_batch=16, batch_size=16),
                  unlearn=Recipe(epochs=10, lr=3e-4, effective_batch=4, batch_size=4),
                  tasks=("forget01", "forget05", "forget10", "forget50", "forget90"),
                  task_methods={"forget01": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget05": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget50": ("NPO+RT",), "forget90": ()},
                  qa_per_author=2, ds_size=20, max_new_tokens=40, sample_tokens=32, kl_items=20,
                  world_knowledge=20, threads=1,
                  retain_for={"forget01": "retain90", "forget05": "retain90", "forget50": "retain10"}),
    # A ~34M-parameter Llama from scratch on all of TOFU (+ every real-author / world-fact pair),
    # sized for one H100 in minutes: batch 32 as in the paper for unlearning, legacy TOFU's
    # 300-item evaluation, 128 new tokens (TOFU answers are shorter). Not yet calibrated on a GPU.
    "gpu": Preset(model="gpu", finetune=Recipe(epochs=25, lr=1e-3, effective_batch=64, batch_size=64),
                  unlearn=Recipe(epochs=10, lr=1e-4, effective_batch=32, batch_size=32),
                  tasks=("forget01", "forget05", "forget10"), ds_size=300, eval_batch=512,
                  max_new_tokens=128, world_knowledge=117),
    # The paper's recipe for a user model (--model PATH, e.g. Llama-2-7b-chat): lr 1e-5, batch 32,
    # 5 fine-tuning and 10 unlearning epochs, every task, 5 seeds.
    "paper": Preset(model="", finetune=Recipe(epochs=5, lr=1e-5, effective_batch=32, batch_size=4),
                    unlearn=Recipe(epochs=10, lr=1e-5, effective_batch=32, batch_size=4),
                    tasks=TASKS, seeds=(0, 1, 2, 3, 4), rt_ablation=(0.5, 2.0, 5.0),
                    gradient_checkpointing=True),
}


# ---- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str
    seed: int
    retain_weight: float
    tag: str = ""

    @property
    def rt_weight(self) -> float:
        return self.retain_weight if self.method.endswith("+RT") else 0.0

    @property
    def id(self) -> str:
        slug = self.method.lower().replace("+", "_")
        return f"{self.task}-{slug}-rt{self.retain_weight:g}-s{self.seed}"


def plan_runs(p: Preset, extras: bool = True) -> list[RunSpec]:
    """Main grid (every task x method x seed, retain weight 1) plus, with ``extras``, NPO+RT at the
    paper's large RT weights (forget50: 5, forget90: 12) and the forget10 RT-weight ablation."""
    runs = [RunSpec(t, m, s, 1.0) for t in p.tasks for m in p.methods_for(t) for s in p.seeds]
    if extras:
        for t in p.tasks:
            if t in p.large_rt:
                runs += [RunSpec(t, "NPO+RT", s, p.large_rt[t], "rt_weight") for s in p.seeds]
        if "forget10" in p.tasks:
            runs += [RunSpec("forget10", "NPO+RT", s, w, "rt_weight")
                     for w in p.rt_ablation if w != 1.0 for s in p.seeds]
    seen, out = set(), []
    for r in runs:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def steps_per_epoch(n: int, recipe: Recipe) -> int:
    """As llm.train plans it: total = epochs * n // batch, per epoch = total // epochs."""
    return max(1, (recipe.epochs * n // recipe.effective_batch) // recipe.epochs)


# ---- stages ------------------------------------------------------------------------------------

class Stages:
    """Content-hashed stage directories: a stage whose ``stage.json`` matches is skipped."""

    def __init__(self, work: Path, force: bool = False, log=print):
        self.work, self.force, self.log = Path(work), force, log

    def run(self, name: str, config: dict, inputs: list[str], fn) -> dict:
        kind = name.split("-")[0]
        h = config_hash({"stage": kind, "config": config, "inputs": inputs,
                         "version": STAGE_VERSIONS.get(kind, 1)})
        path = self.work / f"{name}-{h}"
        marker = path / "stage.json"
        if marker.exists() and not self.force:
            info = json.loads(marker.read_text())
            self.log(f"[skip] {name} (unchanged, {path.name})")
            return {**info, "path": path}
        shutil.rmtree(path, ignore_errors=True)   # a half-finished earlier attempt
        path.mkdir(parents=True)
        start = time.perf_counter()
        self.log(f"[run ] {name} ...")
        info = fn(path) or {}
        seconds = time.perf_counter() - start
        record = {"name": name, "hash": h, "config": config, "inputs": inputs,
                  "seconds": round(seconds, 2), "info": info}
        write_json(marker, record)
        self.log(f"[done] {name} in {seconds:.1f} s")
        return {**json.loads(marker.read_text()), "path": path}


# ---- running -----------------------------------------------------------------------------------

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


def _train_config(o: Options, recipe: Recipe, **kw):
    from llm.train import TrainConfig
    p = o.preset
    return TrainConfig(lr=recipe.lr, epochs=recipe.epochs, effective_batch=recipe.effective_batch,
                       batch_size=recipe.batch_size, warmup_epochs=recipe.warmup_epochs,
                       weight_decay=recipe.weight_decay, template=p.template, device=o.device,
                       precision=p.precision, gradient_checkpointing=p.gradient_checkpointing,
                       ref_cache=str(o.work / "refcache"), eval_batch_size=p.eval_batch,
                       strategy=o.strategy, **kw)


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"  # (llm.distributed.main_rank without importing torch)


def _finetune(o: Options, split: str, data: Path, out: Path) -> dict:
    """Fine-tune the base on ``split``; return timing (training only) and token counts."""
    from llm.pipeline_eval import TrainTimer
    from llm.train import finetune
    p = o.preset
    cfg = _train_config(o, p.finetune, model=p.model, data_dir=str(data), split=split,
                        forget="forget10", seed=p.seed, out=str(out), eval_every=10 ** 9)
    timer = TrainTimer()
    finetune(cfg, eval_fn=timer)
    if not _main_rank():
        return {}
    return timer.report(n_items=len(_load(data, split)), tokens=_split_tokens(out, data, split, p.template),
                        effective_batch=p.finetune.effective_batch)


def _load(data: Path, split: str) -> list[dict]:
    from llm.data import load_split
    return load_split(split, data)


def _split_tokens(model_dir: Path, data: Path, split: str, template: str) -> int:
    from transformers import AutoTokenizer

    from llm.formatting import encode_qa
    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(encode_qa(tok, r["question"], r["answer"], template)["input_ids"])
               for r in _load(data, split))


def _evaluate_fn(o: Options, data: Path, task: str, retain_log):
    from llm.evaluate import make_eval_fn
    p = o.preset
    fn = make_eval_fn(task, data_dir=str(data), template=p.template, retain_logs=retain_log,
                      ds_size=p.ds_size, batch_size=p.eval_batch, max_new_tokens=p.max_new_tokens)
    return lambda model, tokenizer: fn(model, tokenizer, 0, 0.0)


def _sets(data: Path, task: str, n: int) -> dict[str, list[dict]]:
    """Fixed items for sample answers / KL: forget, retain and real-world (world facts) questions."""
    return {"forget": _load(data, task)[:n], "retain": _load(data, "retain_perturbed")[:n],
            "real_world": _load(data, "world_facts_perturbed")[:n]}


def _n_eval_items(o: Options, data: Path, task: str) -> int:
    cap = o.preset.ds_size
    names = (f"{task}_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")
    return sum(min(len(_load(data, s)), cap or 10 ** 9) for s in names)


def run_pipeline(o: Options, log=print) -> dict:
    """Run (or resume) every stage; write the result logs to ``o.out``; return the manifest."""
    import torch

    from llm import pipeline_data
    from llm.evaluate import evaluate_model, write_eval
    from llm.models import load_model_and_tokenizer
    from llm.pipeline_eval import EvalRecorder, ReferenceKL, sample_answers

    from llm import distributed

    p = o.preset
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
    base = {"model": p.model, "template": p.template, "seed": p.seed, "precision": p.precision,
            "recipe": dataclasses.asdict(p.finetune), "checkpointing": p.gradient_checkpointing}
    target = stages.run("target", base, [data_stage["hash"]],
                        lambda path: _finetune(o, "full", ft_data, path / "model"), collective=True)
    eval_cfg = {"ds_size": p.ds_size, "max_new_tokens": p.max_new_tokens, "template": p.template,
                "n_samples": p.n_samples, "sample_tokens": p.sample_tokens}
    manifest = {"schema": SCHEMA, "preset": o.preset_name, "device": _device_name(o.device),
                "versions": _versions(), "config": _jsonable_preset(p),
                "data": data_stage["info"], "target": target["info"], "retain": {}, "runs": []}
    runs_by_task: dict[str, list[RunSpec]] = {}
    for spec in plan_runs(p, o.extras):
        runs_by_task.setdefault(spec.task, []).append(spec)
    for task in p.tasks:
        retain_split = p.retain_split(task)
        retain = stages.run(retain_split, {**base, "split": retain_split}, [data_stage["hash"]],
                            lambda path: _finetune(o, retain_split, ft_data, path / "model"),
                            collective=True)

        def eval_retain(path, retain=retain, task=task):
            model, tok = load_model_and_tokenizer(str(retain["path"] / "model"), device=_device(o))
            result = evaluate_model(model, tok, forget=task, data_dir=str(data), template=p.template,
                                    ds_size=p.ds_size, batch_size=p.eval_batch,
                                    max_new_tokens=p.max_new_tokens)
            write_eval(path, result)
            return {"summary": result["summary"]}

        retain_eval = stages.run(f"retain-eval-{task}", eval_cfg, [retain["hash"], data_stage["hash"]],
                                 eval_retain)
        retain_log = str(retain_eval["path"] / "TOFU_EVAL.json")
        manifest["retain"][task] = {"split": retain_split, "summary": retain_eval["info"]["summary"],
                                    "finetune": retain["info"]}

        def eval_initial(path, task=task, retain_log=retain_log):
            model, tok = load_model_and_tokenizer(str(target["path"] / "model"), device=_device(o))
            model.eval()
            start = time.perf_counter()
            summary = _evaluate_fn(o, data, task, retain_log)(model, tok)
            seconds = time.perf_counter() - start
            samples = sample_answers(model, tok, _sets(data, task, p.n_samples), p.template,
                                     p.sample_tokens)
            row = {"event": "eval", "step": 0, "epoch": 0.0, "summary": summary,
                   "kl": {"forget": 0.0, "real_world": 0.0}, "samples": samples,
                   "eval_seconds": round(seconds, 3), "eval_items": _n_eval_items(o, data, task)}
            write_json(path / "row.json", row)
            return {"summary": summary}

        initial = stages.run(f"initial-{task}", eval_cfg, [target["hash"], retain_eval["hash"]],
                             eval_initial)
        initial_row = json.loads((initial["path"] / "row.json").read_text())
        n_forget = len(_load(data, task))
        for spec in runs_by_task.get(task, []):
            knobs = {"beta": p.beta, "forget_weight": 1.0, "retain_weight": spec.retain_weight,
                     "rt_weight": spec.rt_weight, "lr": p.unlearn.lr, "epochs": p.unlearn.epochs,
                     "effective_batch": p.unlearn.effective_batch}
            spe = steps_per_epoch(n_forget, p.unlearn)

            def do_run(path, spec=spec, knobs=knobs, spe=spe, task=task, retain_log=retain_log):
                from llm.train import unlearn
                kl_sets = {k: v for k, v in _sets(data, task, p.kl_items).items() if k != "retain"}
                recorder = EvalRecorder(_evaluate_fn(o, data, task, retain_log),
                                        lambda model, tok: ReferenceKL(model, tok, kl_sets, p.template,
                                                                       p.eval_batch),
                                        _sets(data, task, p.n_samples), p.template, p.sample_tokens,
                                        _n_eval_items(o, data, task), initial_row=initial_row)
                cfg = _train_config(o, p.unlearn, model=str(target["path"] / "model"), data_dir=str(data),
                                    forget=task, method=METHODS[spec.method], beta=p.beta,
                                    forget_weight=1.0, retain_weight=spec.retain_weight, seed=spec.seed,
                                    out=str(path / "model"), eval_every=spe)
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                model_dir = unlearn(cfg, eval_fn=recorder)
                if not _main_rank():
                    return {}
                train_rows = _train_rows(model_dir / "log.jsonl")
                if not o.keep_models:
                    shutil.rmtree(path / "model", ignore_errors=True)
                meta = {"event": "meta", "id": spec.id, "task": task, "method": spec.method,
                        "method_key": METHODS[spec.method], "seed": spec.seed, "knobs": knobs,
                        "tag": spec.tag, "steps_per_epoch": spe, "n_forget": n_forget,
                        **recorder.timing()}
                write_jsonl(path / "run.jsonl", [meta] + recorder.rows + train_rows)
                return recorder.timing()

            stage = stages.run(f"run-{spec.id}", {"spec": dataclasses.asdict(spec), "knobs": knobs,
                                                  "recipe": dataclasses.asdict(p.unlearn), **eval_cfg,
                                                  "kl_items": p.kl_items},
                               [target["hash"], retain_eval["hash"], data_stage["hash"]], do_run,
                               collective=True)
            rows = [json.loads(r) for r in (stage["path"] / "run.jsonl").read_text().splitlines()]
            rows[0]["stage"] = stage["hash"]
            manifest["runs"].append({"id": spec.id, "task": task, "method": spec.method,
                                     "seed": spec.seed, "knobs": knobs, "tag": spec.tag,
                                     "log": f"runs/{spec.id}.jsonl"})
            if _main_rank():
                write_jsonl(o.out / "runs" / f"{spec.id}.jsonl", compact(rows))
                write_json(o.out / "manifest.json", manifest)   # a usable manifest after every run
    if _main_rank():
        _prune(o.out, manifest)
        write_json(o.out / "manifest.json", manifest)
    return manifest


MAX_TRAIN_ROWS = 200


def compact(rows: list[dict]) -> list[dict]:
    """The committed form of a run log: floats to 6 significant digits, at most MAX_TRAIN_ROWS
    training rows (every k-th step and the last; evaluation rows are all kept)."""
    train = [r for r in rows if r.get("event") == "train"]
    k = -(-len(train) // MAX_TRAIN_ROWS) if train else 1
    keep = {id(r) for i, r in enumerate(train) if i % k == k - 1 or i == len(train) - 1}
    return [_round(r) for r in rows if r.get("event") != "train" or id(r) in keep]


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def _train_rows(log: Path) -> list[dict]:
    """llm.train's per-step rows, compacted: {"event": "train", step, epoch, lr, loss, forget_loss,
    retain_loss, grad_norm} rounded to 5 significant digits."""
    rows = []
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if "event" not in r and "loss" in r:
            rows.append({"event": "train", **{k: (float(f"{v:.5g}") if isinstance(v, float) else v)
                                              for k, v in r.items()}})
    return rows


def _prune(out: Path, manifest: dict) -> None:
    """Drop run logs of an earlier plan from ``out/runs`` (the pipeline owns that folder)."""
    keep = {Path(r["log"]).name for r in manifest["runs"]}
    for path in (out / "runs").glob("*.jsonl"):
        if path.name not in keep:
            path.unlink()


def _device(o: Options) -> str:
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if o.device == "auto" else o.device


def _device_name(device: str) -> str:
    import torch
    if (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict:
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def _jsonable_preset(p: Preset) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(p)))


# ---- command line ------------------------------------------------------------------------------

def build_options(args) -> Options:
    p = dataclasses.replace(PRESETS[args.preset])
    if args.model:
        p.model = args.model
    if not p.model:
        raise PipelineError(f"preset {args.preset!r} needs --model PATH (a local checkpoint folder, "
                            f"e.g. Llama-2-7b-chat-hf)")
    for name in ("tasks", "methods", "seeds", "rt_ablation"):
        value = getattr(args, name)
        if value is not None:
            setattr(p, name, tuple(value))
            if name == "methods":
                p.task_methods = {}
    bad = [t for t in p.tasks if t not in TASKS]
    if bad:
        raise PipelineError(f"unknown task {bad[0]!r}; use any of {', '.join(TASKS)}")
    bad = [m for m in p.methods if m not in METHODS]
    if bad:
        raise PipelineError(f"unknown method {bad[0]!r}; use any of {' '.join(METHODS)}")
    for recipe, prefix in (("finetune", "ft"), ("unlearn", "unlearn")):
        for knob in ("epochs", "lr"):
            value = getattr(args, f"{prefix}_{knob}")
            if value is not None:
                if not value > 0:
                    raise PipelineError(f"--{prefix}-{knob} must be > 0")
                setattr(p, recipe, dataclasses.replace(getattr(p, recipe), **{knob: value}))
    if args.qa_per_author is not None:
        p.qa_per_author = args.qa_per_author
    if args.ds_size is not None:
        p.ds_size = args.ds_size
    for name in ("qa_per_author", "ds_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')} must be >= 1")
    if not 1 <= p.qa_per_author <= 20:
        raise PipelineError("--qa-per-author must be in 1..20")
    from llm.data import resolve_data_dir
    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        raise PipelineError("no TOFU data: pass --data-dir DIR or set TOFU_DATA_DIR")
    if not (data_dir / "full.json").exists() and not (data_dir / "full.jsonl").exists():
        raise PipelineError(f"{data_dir} has no full.json; point --data-dir at a TOFU copy")
    out = Path(args.out or f"results/tofu_{args.preset}")
    work = Path(args.work or f"results/work/tofu_{args.preset}")
    # --preset paper over several processes (torchrun / accelerate launch) shards with FSDP
    strategy = args.strategy or ("fsdp" if args.preset == "paper" and int(os.environ.get("WORLD_SIZE", "1")) > 1
                                 else None)
    if strategy == "fsdp" and "WORLD_SIZE" not in os.environ:
        from llm.distributed import launch_hint
        raise PipelineError(launch_hint("pipeline"))
    return Options(args.preset, p, data_dir, out, work, args.device, not args.no_extras, args.force,
                   args.keep_models, strategy)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llm pipeline", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="scale preset")
    ap.add_argument("--model", default=None, help="base model (preset name or checkpoint folder); "
                    "default: the preset's")
    ap.add_argument("--data-dir", default=None, help="TOFU folder (default $TOFU_DATA_DIR)")
    ap.add_argument("--tasks", nargs="+", default=None, help=f"forget tasks ({' '.join(TASKS)})")
    ap.add_argument("--methods", nargs="+", default=None, help=f"methods ({' '.join(METHODS)})")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="unlearning seeds")
    ap.add_argument("--rt-ablation", nargs="*", type=float, default=None,
                    help="extra NPO+RT retain weights on forget10 (Fig. 11)")
    ap.add_argument("--no-extras", action="store_true",
                    help="main grid only: no large-RT-weight (Fig. 8) or ablation (Fig. 11) runs")
    ap.add_argument("--ft-epochs", type=int, default=None, help="override fine-tuning epochs")
    ap.add_argument("--unlearn-epochs", type=int, default=None, help="override unlearning epochs")
    ap.add_argument("--ft-lr", type=float, default=None, help="override the fine-tuning learning rate")
    ap.add_argument("--unlearn-lr", type=float, default=None, help="override the unlearning learning rate")
    ap.add_argument("--qa-per-author", type=int, default=None, help="override the data subset")
    ap.add_argument("--ds-size", type=int, default=None, help="override eval items per set")
    ap.add_argument("--out", default=None, help="result logs (default results/tofu_<preset>)")
    ap.add_argument("--work", default=None, help="models and stage folders "
                    "(default results/work/tofu_<preset>)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), default=None,
                    help="multi-process training (torchrun): ddp, or fsdp to shard the model; default "
                    "ddp, fsdp for --preset paper when several processes are launched")
    ap.add_argument("--force", action="store_true", help="redo every stage")
    ap.add_argument("--keep-models", action="store_true", help="keep unlearned models in --work")
    ap.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    ap.add_argument("--json", action="store_true", help="print the manifest as one JSON document")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from llm.data import DataError
    from llm.evaluate import EvalError
    from llm.models import ModelError
    from llm.train import ConfigError
    try:
        o = build_options(args)
        if args.dry_run:
            runs = plan_runs(o.preset, o.extras)
            print(json.dumps([dataclasses.asdict(r) | {"id": r.id} for r in runs]) if args.json
                  else "\n".join(r.id for r in runs))
            return 0
        log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
        if not _main_rank():
            log = lambda *a, **k: None  # noqa: E731
        start = time.perf_counter()
        from llm import distributed
        group = distributed.setup(o.device, group=o.strategy == "fsdp", timeout_s=6 * 3600)
        try:
            manifest = run_pipeline(o, log=log)
        finally:
            distributed.teardown(group)
    except (PipelineError, DataError, EvalError, ModelError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _main_rank():
        return 0
    if args.json:
        print(json.dumps(manifest, sort_keys=True))
    else:
        print(f"wrote {len(manifest['runs'])} run logs to {o.out} in {time.perf_counter() - start:.0f} s; "
              f"figures: python -m figures.fig5_tofu_tradeoff --from-results {o.out} (and the other "
              f"TOFU figure modules); claims: python -m figures.tofu_results --from-results {o.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
