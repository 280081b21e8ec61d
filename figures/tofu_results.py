"""Read the TOFU pipeline's result logs (``python -m llm pipeline``) for the TOFU figure modules.

The layout is documented in ``llm/pipeline.py``; in short, ``<dir>/manifest.json`` lists the runs
and each run is ``<dir>/runs/<id>.jsonl``: one ``{"event": "meta", ...}`` row, then one
``{"event": "eval", "step", "epoch", "summary", "kl", "samples"}`` row per evaluation (step 0 is the
fine-tuned target before unlearning). This module only reads and aggregates; it never trains.

Conventions shared by every TOFU figure:
* seeds are averaged per evaluation step (runs of one task/method/knobs share their step grid);
* a method's *best epoch* is the evaluation after at least one unlearning step with the highest
  seed-mean Forget Quality (the paper's Fig. 5 "peak-FQ epoch"); ties go to the earlier epoch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO / "results" / "tofu_cpu"

#: The paper's method order (legends, tables).
METHOD_ORDER = ["GA", "GA+RT", "GA+KL", "IDK+RT", "DPO+RT", "KTO+RT", "NPO", "NPO+RT", "NPO+KL"]
TASK_ORDER = ["forget01", "forget05", "forget10", "forget20", "forget30", "forget50", "forget90"]

#: Summary keys of llm.eval_summary (one place to rename them if the evaluator does).
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


@dataclass
class Run:
    id: str
    task: str
    method: str
    seed: int
    knobs: dict
    evals: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def rt_weight(self) -> float:
        return float(self.knobs.get("rt_weight", 0.0))


def load_results(root=DEFAULT_RESULTS, numerics: str | None = None) -> list[Run]:
    """Every run under ``root`` (manifest order), with its eval rows sorted by step.

    ``numerics`` ("exact" / "ou", llm/metrics.py): every evaluation must have been made with it
    (logs from before summaries recorded it count as exact); a figure never re-summarises."""
    root = Path(root)
    manifest = root / "manifest.json"
    if not manifest.exists():
        raise ResultsError(f"no TOFU results at {root} (missing manifest.json); run "
                           f"'python -m llm pipeline --preset cpu --out {root}' or pass --from-results DIR")
    try:
        entries = json.loads(manifest.read_text())["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ResultsError(f"{manifest}: not a pipeline manifest ({exc}); rerun the pipeline") from None
    runs = [read_run(root / e["log"]) for e in entries]
    if numerics is not None:
        made = {r["summary"].get("numerics", "exact") for run in runs for r in run.evals}
        if made - {numerics}:
            raise ResultsError(f"{root} was evaluated with --numerics {', '.join(sorted(made))}, not "
                               f"{numerics}; pass --numerics {sorted(made)[0]} or rerun the pipeline "
                               f"with --numerics {numerics}")
    return runs


def read_run(path) -> Run:
    """One run log: its meta row and its eval rows (other rows, e.g. training losses, are skipped)."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"missing run log {path}; rerun the pipeline to regenerate it")
    meta, evals = None, []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ResultsError(f"{path}:{lineno}: not JSON; rerun the pipeline to regenerate it") from None
        if row.get("event") == "meta":
            meta = row
        elif row.get("event") == "eval":
            evals.append(row)
    if meta is None:
        raise ResultsError(f"{path}: no meta row; rerun the pipeline to regenerate it")
    evals.sort(key=lambda r: r["step"])
    return Run(id=meta["id"], task=meta["task"], method=meta["method"], seed=int(meta["seed"]),
               knobs=dict(meta.get("knobs", {})), evals=evals, meta=meta)


def select(runs, task=None, method=None, rt_weight=None, tag=None) -> list[Run]:
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


def main_runs(runs, task) -> dict[str, list[Run]]:
    """The main-grid runs of a task (no ablation tag), grouped by method in paper order."""
    groups: dict[str, list[Run]] = {}
    for r in select(runs, task=task):
        if r.meta.get("tag"):
            continue
        groups.setdefault(r.method, []).append(r)
    return {m: groups[m] for m in sorted(groups, key=_method_rank)}


def label(run: Run) -> str:
    """The method name, with its RT weight appended for tagged (non-default-knob) runs."""
    return f"{run.method} RT={run.rt_weight:g}" if run.meta.get("tag") else run.method


def labelled_runs(runs, task) -> dict[str, list[Run]]:
    """All runs of a task grouped by ``label`` (main grid first, in paper order)."""
    groups: dict[str, list[Run]] = {}
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
    lo: np.ndarray
    hi: np.ndarray
    n_seeds: int


def curve(runs: list[Run], key: str) -> Curve:
    """Seed mean and min/max of ``key`` at each evaluation step common to all ``runs``."""
    if not runs:
        raise ValueError("curve() needs at least one run")
    common = sorted(set.intersection(*({row["step"] for row in r.evals} for r in runs)))
    per_step = {r.id: {row["step"]: row for row in r.evals} for r in runs}
    vals = np.array([[value(per_step[r.id][s], key) for s in common] for r in runs], dtype=float)
    first = per_step[runs[0].id]
    epochs = np.array([float(first[s]["epoch"]) for s in common])
    with np.errstate(all="ignore"):
        return Curve(np.array(common), epochs, np.nanmean(vals, 0) if len(vals) else vals,
                     np.nanmin(vals, 0), np.nanmax(vals, 0), len(runs))


def best_index(fq: Curve) -> int:
    """Index into ``fq`` of the best epoch: highest seed-mean FQ after step 0 (earliest on ties)."""
    candidates = [i for i, s in enumerate(fq.steps) if s > 0] or list(range(len(fq.steps)))
    vals = [fq.mean[i] if np.isfinite(fq.mean[i]) else -np.inf for i in candidates]
    return candidates[int(np.argmax(vals))]


def best_point(runs: list[Run]) -> dict:
    """FQ and MU (seed means) of a method at its best epoch, with that epoch and step."""
    fq, mu = curve(runs, FQ), curve(runs, MU)
    i = best_index(fq)
    return {"epoch": float(fq.epochs[i]), "step": int(fq.steps[i]), "forget_quality": float(fq.mean[i]),
            "model_utility": float(mu.mean[i]), "n_seeds": fq.n_seeds}


def final_point(runs: list[Run]) -> dict:
    fq, mu = curve(runs, FQ), curve(runs, MU)
    return {"epoch": float(fq.epochs[-1]), "step": int(fq.steps[-1]), "forget_quality": float(fq.mean[-1]),
            "model_utility": float(mu.mean[-1]), "n_seeds": fq.n_seeds}


def samples(run: Run, step: int | None = None) -> list[dict]:
    """Sample answers stored at ``step`` (default: the last evaluation)."""
    rows = run.evals if step is None else [r for r in run.evals if r["step"] == step]
    return list(rows[-1].get("samples", [])) if rows else []


def describe(root) -> str:
    """One line naming where the results came from (the manifest's preset and device)."""
    try:
        m = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return str(root)
    return f"preset {m.get('preset', '?')} on {m.get('device', '?')}"


def figure_main(argv, *, prog: str, doc: str, compute, plot) -> int:
    """The shared CLI of the TOFU figure modules: read logs, ``compute`` numbers, ``plot`` them.

    ``compute(runs) -> dict`` extracts what is drawn (tests check it); ``plot(data, out_dir) ->
    list[Path]`` draws and saves. ``--quick`` and ``--force`` are accepted for ``python -m
    figures``: the logs are already small and nothing is cached, so both change nothing.
    """
    from .style import DEFAULT_OUT
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="accepted; the logs are already CI-sized")
    parser.add_argument("--force", action="store_true", help="accepted; nothing is cached")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    parser.add_argument("--from-results", default=str(DEFAULT_RESULTS),
                        help="pipeline result directory (manifest.json + runs/)")
    parser.add_argument("--json", action="store_true", help="print the plotted numbers as JSON")
    parser.add_argument("--numerics", default="exact", choices=["exact", "ou"],
                        help="the evaluation numerics the results must have been made with "
                        "(python -m llm pipeline --numerics; docs/eval-parity.md)")
    args = parser.parse_args(argv)
    try:
        data = compute(load_results(args.from_results, args.numerics))
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data["source"] = describe(args.from_results)
    paths = plot(data, Path(args.out))
    if args.json:
        print(json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, indent=2,
                         sort_keys=True, default=_jsonable))
    else:
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def require(runs, what: str, hint: str):
    """``runs`` if non-empty, else a ResultsError naming the pipeline flags that produce them."""
    if not runs:
        raise ResultsError(f"no {what} runs in the results; rerun 'python -m llm pipeline {hint}'")
    return runs


def curve_dict(c: Curve) -> dict:
    return {"steps": c.steps.tolist(), "epochs": c.epochs.tolist(), "mean": c.mean.tolist(),
            "lo": c.lo.tolist(), "hi": c.hi.tolist(), "n_seeds": c.n_seeds}


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def _method_rank(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


# ---- the paper's TOFU claims, measured on whatever results are given ----------------------------

USABLE = 0.5   # "comparable utility": an epoch counts if MU >= USABLE x the initial model's MU


def _mu_path(runs):
    c = curve(runs, MU)
    return c.epochs, c.mean


def collapse_epoch(runs) -> float | None:
    """First epoch at which the seed-mean MU falls below half the initial MU (None: never)."""
    epochs, mu = _mu_path(runs)
    below = [e for e, m in zip(epochs, mu) if m < USABLE * mu[0]]
    return float(below[0]) if below else None


def best_usable_fq(runs) -> tuple[float, float, float]:
    """(FQ, MU, epoch) at the highest-FQ evaluation whose MU >= USABLE x initial MU (after step 0)."""
    fq, mu = curve(runs, FQ), curve(runs, MU)
    ok = [i for i in range(len(fq.steps)) if fq.steps[i] > 0 and mu.mean[i] >= USABLE * mu.mean[0]]
    if not ok:
        return (float("nan"), float("nan"), float("nan"))
    i = max(ok, key=lambda j: (fq.mean[j], -j))
    return float(fq.mean[i]), float(mu.mean[i]), float(fq.epochs[i])


def claims(runs) -> list[dict]:
    """One row per claim of the issue: what was measured and whether the paper's claim holds."""
    rows = []
    for task in ("forget05", "forget10"):
        g = main_runs(runs, task)
        if all(m in g for m in ("GA", "GA+RT", "NPO", "NPO+RT")):
            mu0 = curve(g["NPO"], MU).mean[0]
            final = {m: final_point(g[m])["model_utility"] for m in ("GA", "GA+RT", "NPO", "NPO+RT")}
            when = {m: collapse_epoch(g[m]) for m in final}
            holds = (max(final["GA"], final["GA+RT"]) < min(final["NPO"], final["NPO+RT"]) and
                     all(when[m] is not None and (when["NPO"] is None or when[m] <= when["NPO"])
                         for m in ("GA", "GA+RT")))
            rows.append({"claim": f"{task}: GA and GA+RT collapse while NPO degrades slowly",
                         "measured": f"MU initial {mu0:.3g}; last epoch " +
                         ", ".join(f"{m} {v:.3g}" for m, v in final.items()) + "; MU < half initial from epoch " +
                         ", ".join(f"{m} {'never' if e is None else f'{e:g}'}" for m, e in when.items()),
                         "holds": holds})
    g = main_runs(runs, "forget10")
    if all(m in g for m in ("GA", "GA+RT", "NPO+RT")):
        best = {m: best_usable_fq(g[m]) for m in ("GA", "GA+RT", "NPO+RT")}
        holds = all(best["NPO+RT"][0] > best[m][0] for m in ("GA", "GA+RT")) if np.isfinite(best["NPO+RT"][0]) else False
        rows.append({"claim": "forget10: NPO+RT reaches a higher FQ than GA/GA+RT at comparable utility",
                     "measured": "best FQ with MU >= half initial: " + ", ".join(
                         f"{m} {'none' if not np.isfinite(b[0]) else f'{b[0]:.3g} (MU {b[1]:.3g}, epoch {b[2]:g})'}"
                         for m, b in best.items()),
                     "holds": bool(holds)})
    rs1 = select(runs, task="forget50", method="NPO+RT", rt_weight=1.0)
    rs5 = select(runs, task="forget50", method="NPO+RT", rt_weight=5.0)
    if rs1 and rs5:
        a, b = final_point(rs1), final_point(rs5)
        rows.append({"claim": "forget50: a larger RT weight (5 vs 1) raises NPO+RT's utility",
                     "measured": f"last epoch MU {a['model_utility']:.3g} (RT 1) vs {b['model_utility']:.3g} "
                                 f"(RT 5); FQ {a['forget_quality']:.3g} vs {b['forget_quality']:.3g}",
                     "holds": b["model_utility"] > a["model_utility"]})
    by_weight = {0.0: select(runs, task="forget10", method="NPO")}
    for r in select(runs, task="forget10", method="NPO+RT"):
        by_weight.setdefault(r.rt_weight, []).append(r)
    by_weight = {w: rs for w, rs in sorted(by_weight.items()) if rs}
    if len(by_weight) >= 3:
        last = {w: final_point(rs) for w, rs in by_weight.items()}
        mus = [p["model_utility"] for p in last.values()]
        rows.append({"claim": "forget10 (Fig. 11): NPO+RT's utility rises with the RT weight (NPO weight 1)",
                     "measured": "last epoch MU / FQ by RT weight: " + ", ".join(
                         f"{w:g}: {p['model_utility']:.3g} / {p['forget_quality']:.3g}" for w, p in last.items()),
                     "holds": all(b >= a for a, b in zip(mus, mus[1:]))})
    rs90 = select(runs, task="forget90", method="NPO+RT", rt_weight=12.0)
    if rs5 or rs90:
        parts = []
        for name, rs in (("forget50 RT 5", rs5), ("forget90 RT 12", rs90)):
            if rs:
                p = final_point(rs)
                parts.append(f"{name}: FQ {p['forget_quality']:.3g}, MU {p['model_utility']:.3g}")
        ok = all(final_point(rs)["forget_quality"] > 0.05 for rs in (rs5, rs90) if rs)
        rows.append({"claim": "forget50/90 (Fig. 8): NPO+RT with RT weight 5 / 12 keeps FQ > 0.05",
                     "measured": "; ".join(parts) + " (last epoch)", "holds": ok})
    return rows


def claims_markdown(runs, source: str = "") -> str:
    lines = [f"Measured on: {source}" if source else "", "",
             "| claim (paper) | measured | holds here? |", "|---|---|---|"]
    for r in claims(runs):
        lines.append(f"| {r['claim']} | {r['measured']} | {'yes' if r['holds'] else 'no'} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv=None) -> int:
    """``python -m figures.tofu_results [--from-results DIR] [--json]``: the claims table."""
    ap = argparse.ArgumentParser(prog="python -m figures.tofu_results", description=main.__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--from-results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--numerics", default="exact", choices=["exact", "ou"],
                    help="the evaluation numerics the results must have been made with")
    args = ap.parse_args(argv)
    try:
        runs = load_results(args.from_results, args.numerics)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(claims(runs), indent=2) if args.json else
          claims_markdown(runs, describe(args.from_results)), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
