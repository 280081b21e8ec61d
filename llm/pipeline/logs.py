"""The pipeline's result logs: what ``--out`` holds, and the compact form the run logs take there.

Result schema (``--out``, default ``results/tofu_<preset>``; read by ``llm/studies/tofu_results.py``):
  manifest.json  {"schema": 1, "preset", "device", "versions", "config": {...}, "data": {file: n},
                  "target": {...}, "retain": {task: {"summary": ...}},
                  "runs": [{"id", "task", "method", "seed", "knobs", "tag", "log"}, ...],
                  "planned": [run id, ...], "complete": bool}
                 The manifest is rewritten after every run, so a stopped pipeline leaves a usable
                 but partial one: "complete" is false until every planned run is in "runs"
                 (``completeness``; readers refuse a partial folder unless asked). Manifests
                 written before this was recorded have neither key.
  runs/<id>.jsonl, one JSON object per line:
    {"event": "meta", "id", "task", "method" (GA, GA+RT, GA+KL, IDK+RT, DPO+RT, KTO+RT, NPO, NPO+RT,
     NPO+KL), "method_key" (its --method name, llm/train/methods/), "seed", "knobs": {"beta", "forget_weight",
     "retain_weight", "rt_weight" (the retain weight of +RT methods, else 0), "lr", "epochs",
     "effective_batch"}, "tag" ("" = main grid; "rt_weight" = a Fig. 8 / Fig. 11 RT-weight run),
     "steps_per_epoch", "n_forget", "stage", "train_seconds", "train_steps", "eval_seconds",
     "peak_train_bytes"}
    {"event": "eval", "step", "epoch", "summary": {llm.evaluate.summary summary: model_utility,
     forget_quality, forget_truth_ratio, forget_Q_A_Prob, forget_Q_A_ROUGE and the nine Model
     Utility components ...}, "kl": {"forget": x, "real_world": y} (KL(initial || current) per
     answer token), "samples": [{"set", "question", "answer", "generated"}], "eval_seconds",
     "eval_items"}   one per epoch (per step on forget01); step 0 is the target model.
    {"event": "train", "step", "epoch", "lr", "loss", "forget_loss", "retain_loss", "grad_norm"}
     llm.train.loop's per-step rows (at most 200 per run: every k-th step and the last).
  Floats are rounded to 6 significant digits.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SCHEMA", "MAX_TRAIN_ROWS", "compact", "train_rows", "prune", "mark_progress",
           "completeness"]

SCHEMA = 1
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


def train_rows(log: Path) -> list[dict]:
    """llm.train.loop's per-step rows, compacted: {"event": "train", step, epoch, lr, loss, forget_loss,
    retain_loss, grad_norm} rounded to 5 significant digits."""
    rows = []
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if "event" not in r and "loss" in r:
            rows.append({"event": "train", **{k: (float(f"{v:.5g}") if isinstance(v, float) else v)
                                              for k, v in r.items()}})
    return rows


def prune(out: Path, manifest: dict) -> None:
    """Drop run logs of an earlier plan from ``out/runs`` (the pipeline owns that folder)."""
    keep = {Path(r["log"]).name for r in manifest["runs"]}
    for path in (out / "runs").glob("*.jsonl"):
        if path.name not in keep:
            path.unlink()


def mark_progress(manifest: dict, planned: list[str]) -> dict:
    """Record the planned run ids and whether every one of them is in ``manifest["runs"]``."""
    done = {r["id"] for r in manifest["runs"]}
    manifest["planned"] = list(planned)
    manifest["complete"] = all(p in done for p in planned)
    return manifest


def completeness(manifest: dict) -> tuple[int, int] | None:
    """(runs present, runs planned) of a partial result folder's manifest; None when it is
    complete or predates the record."""
    if manifest.get("complete", True):
        return None
    planned = manifest.get("planned") or []
    return len(manifest.get("runs") or []), len(planned)
