"""What each stage of the TOFU pipeline computes (the stage bodies), and the producers each stage's
key hashes (``stage_code``). The order the stages run in, and what they read from each other:
llm/pipeline/run.py, whose ``Options`` is the ``o`` every body takes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from infra.files import write_json, write_jsonl
from llm.pipeline.environment import main_rank, resolve_device
from llm.pipeline.logs import train_rows
from llm.pipeline.plan import Recipe, RunSpec

__all__ = ["stage_code", "finetune_model", "load_items", "eval_retain", "eval_initial", "unlearn_run",
           "attack"]


def _train_config(o, recipe: Recipe, **kw):
    from llm.train.loop import TrainConfig
    p = o.preset
    return TrainConfig(lr=recipe.lr, epochs=recipe.epochs, effective_batch=recipe.effective_batch,
                       batch_size=recipe.batch_size, warmup_epochs=recipe.warmup_epochs,
                       weight_decay=recipe.weight_decay, template=p.template, device=o.device,
                       precision=p.precision, gradient_checkpointing=p.gradient_checkpointing,
                       ref_cache=str(o.work / "refcache"), eval_batch_size=p.eval_batch,
                       strategy=o.strategy, **kw)


def stage_code(kind: str, method: str | None = None) -> tuple:
    """The producers a stage's key hashes (infra/codehash.py) for ``kind`` (finetune, retain-eval,
    initial, run, attacks; ``method``: a run's display name). IDK-style runs declare the packaged refusal
    list they read (a data folder's own idontknow.jsonl is in the data stage's hash already)."""
    if kind == "run":
        from llm.data.tofu import PACKAGED_IDK
        from llm.train.methods import by_label
        return (unlearn_run,) + ((PACKAGED_IDK,) if "idk" in by_label(method).needs else ())
    return {"finetune": (finetune_model,), "retain-eval": (eval_retain,), "initial": (eval_initial,),
            "attacks": (attack,)}[kind]


def finetune_model(o, split: str, data: Path, path: Path) -> dict:
    """Fine-tune the base on ``split`` into ``path/model``; return timing (training only) and token
    counts."""
    from llm.pipeline.recording import TrainTimer
    from llm.train.loop import finetune
    p = o.preset
    out = path / "model"
    cfg = _train_config(o, p.finetune, model=p.model, data_dir=str(data), split=split,
                        forget="forget10", seed=p.seed, out=str(out), eval_every=10 ** 9)
    timer = TrainTimer()
    finetune(cfg, eval_fn=timer)
    if not main_rank():
        return {}
    return timer.report(n_items=len(load_items(data, split)), tokens=_split_tokens(out, data, split, p.template),
                        effective_batch=p.finetune.effective_batch)


def load_items(data: Path, split: str) -> list[dict]:
    from llm.data.tofu import load_split
    return load_split(split, data)


def _split_tokens(model_dir: Path, data: Path, split: str, template: str) -> int:
    from transformers import AutoTokenizer

    from llm.data.formatting import encode_qa
    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(encode_qa(tok, r["question"], r["answer"], template)["input_ids"])
               for r in load_items(data, split))


def _evaluate_fn(o, data: Path, task: str, retain_log):
    from llm.evaluate.scoring import make_eval_fn
    p = o.preset
    fn = make_eval_fn(task, data_dir=str(data), template=p.template, retain_logs=retain_log,
                      ds_size=p.ds_size, batch_size=p.eval_batch, max_new_tokens=p.max_new_tokens,
                      numerics=p.numerics)
    return lambda model, tokenizer: fn(model, tokenizer, 0, 0.0)


def _sets(data: Path, task: str, n: int) -> dict[str, list[dict]]:
    """Fixed items for sample answers / KL: forget, retain and real-world (world facts) questions."""
    return {"forget": load_items(data, task)[:n], "retain": load_items(data, "retain_perturbed")[:n],
            "real_world": load_items(data, "world_facts_perturbed")[:n]}


def _n_eval_items(o, data: Path, task: str) -> int:
    cap = o.preset.ds_size
    names = (f"{task}_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")
    return sum(min(len(load_items(data, s)), cap or 10 ** 9) for s in names)


def eval_retain(o, data: Path, retain_dir: Path, task: str, path: Path) -> dict:
    """The retain model's TOFU_EVAL.json on ``task`` (Forget Quality's reference)."""
    from llm.evaluate.logs import write_eval
    from llm.models import load_model_and_tokenizer
    from llm.evaluate.scoring import evaluate_model
    p = o.preset
    model, tok = load_model_and_tokenizer(str(retain_dir / "model"), device=resolve_device(o.device))
    result = evaluate_model(model, tok, forget=task, data_dir=str(data), template=p.template,
                            ds_size=p.ds_size, batch_size=p.eval_batch,
                            max_new_tokens=p.max_new_tokens, numerics=p.numerics)
    write_eval(path, result)
    return {"summary": result["summary"]}


def eval_initial(o, data: Path, target_dir: Path, task: str, retain_log: str, path: Path) -> dict:
    """The target's evaluation on ``task`` (step 0 of every run) with sample answers: row.json."""
    from llm.models import load_model_and_tokenizer
    from llm.pipeline.recording import sample_answers
    p = o.preset
    model, tok = load_model_and_tokenizer(str(target_dir / "model"), device=resolve_device(o.device))
    model.eval()
    start = time.perf_counter()
    summary = _evaluate_fn(o, data, task, retain_log)(model, tok)
    seconds = time.perf_counter() - start
    samples = sample_answers(model, tok, _sets(data, task, p.n_samples), p.template, p.sample_tokens)
    row = {"event": "eval", "step": 0, "epoch": 0.0, "summary": summary,
           "kl": {"forget": 0.0, "real_world": 0.0}, "samples": samples,
           "eval_seconds": round(seconds, 3), "eval_items": _n_eval_items(o, data, task)}
    write_json(path / "row.json", row)
    return {"summary": summary}


def unlearn_run(o, data: Path, target_dir: Path, spec: RunSpec, knobs: dict, spe: int,
                 retain_log: str, initial_row: dict, n_forget: int, path: Path) -> dict:
    """One unlearning run, evaluated every epoch: run.jsonl (meta, eval rows, train rows). With
    ``--attacks`` a main-grid run keeps its final model (``model/``) and its best-FQ epoch's
    (``best_fq/``, unless that is step 0, the target), recorded in the meta row's ``best_fq``."""
    import torch

    from llm.train.methods import by_label
    from llm.pipeline.best_fq import KeepBestFQ
    from llm.pipeline.recording import EvalRecorder, ReferenceKL
    from llm.train.unlearning import unlearn
    p, task, method = o.preset, spec.task, by_label(spec.method)
    kl_sets = {k: v for k, v in _sets(data, task, p.kl_items).items() if k != "retain"}
    recorder = EvalRecorder(_evaluate_fn(o, data, task, retain_log),
                            lambda model, tok: ReferenceKL(model, tok, kl_sets, p.template, p.eval_batch),
                            _sets(data, task, p.n_samples), p.template, p.sample_tokens,
                            _n_eval_items(o, data, task), initial_row=initial_row)
    cfg = _train_config(o, p.unlearn, model=str(target_dir / "model"), data_dir=str(data),
                        forget=task, method=method.name,
                        hparams={k: v for k, v in knobs.items() if k in method.hparams}, seed=spec.seed,
                        out=str(path / "model"), eval_every=spe,
                        **({} if spec.max_grad_norm is None else {"max_grad_norm": spec.max_grad_norm}))
    # --attacks attacks the final model and the best-FQ epoch's (llm/pipeline/best_fq.py)
    keeper = KeepBestFQ(recorder, path / "best_fq") if o.attacks and not spec.tag else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    model_dir = unlearn(cfg, eval_fn=keeper or recorder)
    if not main_rank():
        return {}
    trained = train_rows(model_dir / "log.jsonl")
    if not (o.keep_models or o.attacks):  # --attacks reads the final models
        shutil.rmtree(path / "model", ignore_errors=True)
    meta = {"event": "meta", "id": spec.id, "task": task, "method": spec.method,
            "method_key": method.name, "seed": spec.seed, "knobs": knobs,
            "tag": spec.tag, "steps_per_epoch": spe, "n_forget": n_forget, **recorder.timing(),
            **({"best_fq": keeper.best} if keeper else {})}
    write_jsonl(path / "run.jsonl", [meta] + recorder.rows + trained)
    return recorder.timing()



def attack(models: dict, target_model: str, retain_model: str, cfg, ds_size, retain_log: str,
           path: Path) -> dict:
    """The attacks stage's body: both attacks (int4, groups of 128) into ``path/attacks.json``;
    Forget Quality before / after int4 against ``retain_log`` (the pipeline's own retain
    evaluation, on the same ``ds_size`` items as every epoch's)."""
    from llm.studies.attacks import attack_models
    doc = attack_models(models, target_model, retain_model, cfg, ("int4",), 128, ds_size,
                        eval_retain_logs=retain_log)
    write_json(path / "attacks.json", doc)
    return {"models": sorted(models)}
