"""Read the TOFU pipeline's result logs (``python -m llm pipeline``) for the TOFU figures and the claims table.

The layout is documented in ``llm/pipeline/logs.py``; in short, ``<dir>/manifest.json`` lists the runs
and each run is ``<dir>/runs/<id>.jsonl``: one ``{"event": "meta", ...}`` row, then one
``{"event": "eval", "step", "epoch", "summary", "kl", "samples"}`` row per evaluation (step 0 is the
fine-tuned target before unlearning). This module only reads and aggregates; it never trains.
The figures (figures/fig{2,5,6,7,8,10,11,12}_*.py) draw from it; llm/studies/tofu_claims.py checks the
paper's claims with it.

Conventions shared by every TOFU figure:
* seeds are averaged per evaluation step (runs of one task/method/knobs share their step grid);
  the spread drawn and reported is the sample standard deviation across seeds (ddof=1; 0 with one
  seed), and a curve's band is mean +- std;
* a method's *best epoch* is the evaluation after at least one unlearning step with the highest
  seed-mean Forget Quality (the paper's Fig. 5 "peak-FQ epoch"); ties go to the earlier epoch.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra.cli import MissingResults
from infra.files import NonFiniteError, loads_finite, read_json
from llm.train.methods import REGISTRY
from llm.pipeline.logs import completeness
from llm.pipeline.plan import PAPER_GRID

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO / "results" / "tofu_cpu"

TASK_ORDER = ["forget01", "forget05", "forget10", "forget20", "forget30", "forget50", "forget90"]

#: Summary keys of llm.evaluate.summary (one place to rename them if the evaluator does).
FQ, MU, FORGET_TR = "forget_quality", "model_utility", "forget_truth_ratio"
#: (set label, ROUGE key, Probability key, Truth-ratio key) for the full-statistics figures.
SET_KEYS = [
    ("Forget", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio"),
    ("Retain", "retain_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Truth_Ratio"),
    ("Real Authors", "ra_Q_A_ROUGE", "ra_Q_A_Prob_normalised", "ra_Truth_Ratio"),
    ("Real World", "wf_Q_A_ROUGE", "wf_Q_A_Prob_normalised", "wf_Truth_Ratio"),
]
#: KL(initial || current) evaluation sets stored under each eval row's "kl".
KL_FORGET, KL_REAL_WORLD = "forget", "real_world"


class ResultsError(ValueError):
    """A missing or malformed result directory: one line naming the fix."""


class MissingRuns(ResultsError, MissingResults):
    """The folder is a valid result folder but holds none of the runs asked for."""


@dataclass
class RunLog:
    id: str
    task: str
    method: str
    seed: int
    knobs: dict
    evals: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    train: list[dict] = field(default_factory=list)   # the training rows (loss terms per step)

    @property
    def rt_weight(self) -> float:
        return float(self.knobs.get("rt_weight", 0.0))


def load_results(root=DEFAULT_RESULTS, numerics: str | None = None,
                 allow_incomplete: bool = False) -> list[RunLog]:
    """Every run under ``root`` (manifest order), with its eval rows sorted by step.

    ``numerics`` ("exact" / "ou", llm/evaluate/metrics.py): every evaluation must have been made with it
    (logs from before summaries recorded it count as exact); a figure never re-summarises.
    A folder whose pipeline stopped before its last planned run is refused unless
    ``allow_incomplete`` (a figure of 1 of 2 runs would look like a finished one)."""
    root = Path(root)
    manifest = _manifest(root)
    partial = completeness(manifest)
    if partial and not allow_incomplete:
        raise ResultsError(f"{root} is incomplete: its pipeline stopped after {partial[0]} of "
                           f"{partial[1]} planned runs; rerun the same pipeline command to finish "
                           f"it, or pass --allow-incomplete")
    try:
        entries = manifest["runs"]
        logs = [root / e["log"] for e in entries]
    except (KeyError, TypeError) as exc:
        raise ResultsError(f"{root / 'manifest.json'}: not a pipeline manifest ({exc}); rerun the "
                           f"pipeline") from None
    runs = [read_run(log) for log in logs]
    if numerics is not None:
        made = {r["summary"].get("numerics", "exact") for run in runs for r in run.evals}
        if made - {numerics}:
            raise ResultsError(f"{root} was evaluated with --numerics {', '.join(sorted(made))}, not "
                               f"{numerics}; pass --numerics {sorted(made)[0]} or rerun the pipeline "
                               f"with --numerics {numerics}")
    return runs


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.exists():
        raise ResultsError(f"no TOFU results at {root} (missing manifest.json); run "
                           f"'python -m llm pipeline --preset cpu --out {root}' or pass --from-results DIR")
    try:
        manifest = read_json(path)
    except NonFiniteError as exc:
        raise ResultsError(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a pipeline manifest ({exc}); rerun the pipeline") from None
    if not isinstance(manifest, dict):
        raise ResultsError(f"{path}: not a pipeline manifest; rerun the pipeline")
    return manifest


def read_run(path) -> RunLog:
    """One run log: its meta row, its eval rows and its training rows (other rows are skipped).
    A non-finite number anywhere in it is refused, naming the line and key."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"missing run log {path}; rerun the pipeline to regenerate it")
    meta, evals, train = None, [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads_finite(line, f"{path}:{lineno}")
        except NonFiniteError as exc:
            raise ResultsError(str(exc)) from None
        except json.JSONDecodeError:
            raise ResultsError(f"{path}:{lineno}: not JSON; rerun the pipeline to regenerate it") from None
        if row.get("event") == "meta":
            meta = row
        elif row.get("event") == "eval":
            evals.append(row)
        elif row.get("event") == "train":
            train.append(row)
    if meta is None:
        raise ResultsError(f"{path}: no meta row; rerun the pipeline to regenerate it")
    evals.sort(key=lambda r: r["step"])
    train.sort(key=lambda r: r["step"])
    return RunLog(id=meta["id"], task=meta["task"], method=meta["method"], seed=int(meta["seed"]),
                  knobs=dict(meta.get("knobs", {})), evals=evals, meta=meta, train=train)


def _by_epoch(rows: list[tuple[float, float]], reduce) -> tuple[list[int], list[float]]:
    """``reduce`` of the values logged in each epoch e (e-1 < epoch <= e), for e = 1, 2, ..."""
    epochs, values = [], []
    for e in range(1, math.ceil(max(ep for ep, _ in rows) - 1e-9) + 1):
        got = np.array([v for ep, v in rows if e - 1 < ep <= e + 1e-9])
        if got.size:
            epochs.append(e)
            values.append(float(reduce(got)))
    return epochs, values


def npo_weight_by_epoch(run: RunLog) -> dict:
    """NPO's weight and log-ratio per epoch, read back from the logged forget loss (no model needed).

    Each training row's ``forget_loss`` is the batch mean of (2/beta) softplus(beta R);
    ``theory.objectives.npo_weight_from_loss`` turns it into an upper bound on the batch-mean weight
    2 sigma(beta R) and ``npo_log_ratio_from_loss`` into an upper bound on the batch-mean R (summed
    over answer tokens; both maps are concave/monotone, so the batch mean of R is at most this).
    Returns ``{"epochs": [1..E], "weight": [epoch mean of the step bounds], "log_ratio": [epoch
    median of the step bounds]}``; epoch e covers the steps logged with e-1 < epoch <= e."""
    from theory.objectives import npo_log_ratio_from_loss, npo_weight_from_loss
    beta = float(run.knobs["beta"])
    rows = [(float(r["epoch"]), float(r["forget_loss"])) for r in run.train if "forget_loss" in r]
    if not rows:
        raise ResultsError(f"run {run.id} has no training rows with forget_loss; rerun the pipeline")
    epochs, weight = _by_epoch(rows, lambda loss: np.mean(npo_weight_from_loss(loss, beta)))
    _, ratio = _by_epoch(rows, lambda loss: np.median(npo_log_ratio_from_loss(loss, beta)))
    return {"epochs": epochs, "weight": weight, "log_ratio": ratio}


def grad_norm_by_epoch(run: RunLog) -> dict:
    """The median gradient norm (before clipping, as logged) of each epoch's steps."""
    rows = [(float(r["epoch"]), float(r["grad_norm"])) for r in run.train if "grad_norm" in r]
    if not rows:
        raise ResultsError(f"run {run.id} has no training rows with grad_norm; rerun the pipeline")
    epochs, norms = _by_epoch(rows, np.median)
    return {"epochs": epochs, "grad_norm": norms}


def select(runs, task=None, method=None, rt_weight=None, tag=None) -> list[RunLog]:
    """Runs matching every given field (``tag`` is the meta row's optional experiment tag)."""
    out = []
    for r in runs:
        if task is not None and r.task != task:
            continue
        if method is not None and r.method != method:
            continue
        if rt_weight is not None and not math.isclose(r.rt_weight, rt_weight):
            continue
        if tag is not None and r.meta.get("tag") != tag:
            continue
        out.append(r)
    return out


def main_runs(runs, task) -> dict[str, list[RunLog]]:
    """The main-grid runs of a task (no ablation tag), grouped by method in paper order."""
    groups: dict[str, list[RunLog]] = {}
    for r in select(runs, task=task):
        if r.meta.get("tag"):
            continue
        groups.setdefault(r.method, []).append(r)
    return {m: groups[m] for m in sorted(groups, key=_method_rank)}


def clip_suffix(run: RunLog) -> str:
    """" no clip" for a run of the clipping ablation (tag "no_clip"), else ""."""
    return " no clip" if run.meta.get("tag") == "no_clip" else ""


def label(run: RunLog) -> str:
    """The method name, with its RT weight (or, tag "beta", its beta; tag "no_clip", "no clip")
    appended for tagged (non-default-knob) runs."""
    if run.meta.get("tag") == "beta":
        return f"{run.method} β={run.knobs['beta']:g}"
    if run.meta.get("tag") == "no_clip":
        return run.method + clip_suffix(run)
    return f"{run.method} RT={run.rt_weight:g}" if run.meta.get("tag") else run.method


def labelled_runs(runs, task) -> dict[str, list[RunLog]]:
    """All runs of a task grouped by ``label`` (main grid first, in paper order)."""
    groups: dict[str, list[RunLog]] = {}
    for r in select(runs, task=task):
        groups.setdefault(label(r), []).append(r)
    return {k: groups[k] for k in sorted(groups, key=lambda k: (" " in k,) + _method_rank(k.split(" ")[0]) + (k,))}


def tasks_present(runs) -> list[str]:
    return sorted({r.task for r in runs}, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else 99, t))


def value(row: dict, key: str) -> float:
    """A summary value (or ``kl:<set>``) of one eval row as float; NaN where absent or None."""
    if key.startswith("kl:"):
        v = (row.get("kl") or {}).get(key[3:])
    else:
        v = row["summary"].get(key)
    return float("nan") if v is None else float(v)


@dataclass
class Curve:
    steps: np.ndarray
    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray       # sample std across seeds (ddof=1); 0 with one seed
    lo: np.ndarray        # mean - std
    hi: np.ndarray        # mean + std
    n_seeds: int


def seed_std(vals: np.ndarray) -> np.ndarray:
    """Sample standard deviation over axis 0 (the seeds), NaNs ignored; 0 where one value."""
    vals = np.asarray(vals, dtype=float)
    if vals.shape[0] < 2:
        return np.zeros(vals.shape[1:])
    n = np.sum(np.isfinite(vals), axis=0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # a step where < 2 seeds are finite
        return np.where(n > 1, np.nanstd(vals, axis=0, ddof=1), 0.0)


def curve(runs: list[RunLog], key: str) -> Curve:
    """Seed mean and std (band mean +- std) of ``key`` at each evaluation step common to all ``runs``."""
    if not runs:
        raise ValueError("curve() needs at least one run")
    common = sorted(set.intersection(*({row["step"] for row in r.evals} for r in runs)))
    per_step = {r.id: {row["step"]: row for row in r.evals} for r in runs}
    vals = np.array([[value(per_step[r.id][s], key) for s in common] for r in runs], dtype=float)
    first = per_step[runs[0].id]
    epochs = np.array([float(first[s]["epoch"]) for s in common])
    with np.errstate(all="ignore"):
        mean = np.nanmean(vals, 0)
    std = seed_std(vals)
    return Curve(np.array(common), epochs, mean, std, mean - std, mean + std, len(runs))


def best_index(fq: Curve) -> int:
    """Index into ``fq`` of the best epoch: highest seed-mean FQ after step 0 (earliest on ties)."""
    candidates = [i for i, s in enumerate(fq.steps) if s > 0] or list(range(len(fq.steps)))
    vals = [fq.mean[i] if np.isfinite(fq.mean[i]) else -np.inf for i in candidates]
    return candidates[int(np.argmax(vals))]


def best_point(runs: list[RunLog]) -> dict:
    """FQ and MU (seed means and stds) of a method at its best epoch, with that epoch and step."""
    fq, mu = curve(runs, FQ), curve(runs, MU)
    i = best_index(fq)
    return _point(fq, mu, i)


def final_point(runs: list[RunLog]) -> dict:
    """FQ and MU (seed means and stds) at the last evaluation."""
    fq, mu = curve(runs, FQ), curve(runs, MU)
    return _point(fq, mu, len(fq.steps) - 1)


def _point(fq: Curve, mu: Curve, i: int) -> dict:
    return {"epoch": float(fq.epochs[i]), "step": int(fq.steps[i]), "forget_quality": float(fq.mean[i]),
            "model_utility": float(mu.mean[i]), "forget_quality_std": float(fq.std[i]),
            "model_utility_std": float(mu.std[i]), "n_seeds": fq.n_seeds}


def samples(run: RunLog, step: int | None = None) -> list[dict]:
    """Sample answers stored at ``step`` (default: the last evaluation)."""
    rows = run.evals if step is None else [r for r in run.evals if r["step"] == step]
    return list(rows[-1].get("samples", [])) if rows else []


def describe(root) -> str:
    """One line naming where the results came from (the manifest's preset and device, and how
    many of the planned runs a partial folder holds)."""
    try:
        m = read_json(Path(root) / "manifest.json")
    except (OSError, ValueError):
        return str(root)
    partial = completeness(m) if isinstance(m, dict) else None
    note = f" (INCOMPLETE: {partial[0]} of {partial[1]} planned runs)" if partial else ""
    return f"preset {m.get('preset', '?')} on {m.get('device', '?')}{note}"

def require(runs, what: str, hint: str):
    """``runs`` if non-empty, else a ResultsError naming the pipeline flags that produce them."""
    if not runs:
        raise MissingRuns(f"no {what} runs in the results; rerun 'python -m llm pipeline {hint}'")
    return runs


def curve_dict(c: Curve) -> dict:
    return {"steps": c.steps.tolist(), "epochs": c.epochs.tolist(), "mean": c.mean.tolist(),
            "std": c.std.tolist(), "lo": c.lo.tolist(), "hi": c.hi.tolist(), "n_seeds": c.n_seeds}


def _method_rank(m: str):
    """Legends and tables: the paper's grid in its order, then the other registered methods in
    registration order (llm/train/methods/), then any other label by name."""
    if m in PAPER_GRID:
        return (0, PAPER_GRID.index(m), m)
    labels = [x.label for x in REGISTRY.values()]
    return (1, labels.index(m), m) if m in labels else (2, 0, m)
