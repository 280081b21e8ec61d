"""The paper's TOFU claims, measured on whatever pipeline results are given.

    python -m llm claims [--from-results results/tofu_cpu] [--numerics exact|ou] [--json] [--weights]

Prints the claims table (claim | measured | holds here?) of docs/results.md, or one JSON list.
``--weights`` prints instead the mechanism behind the first two claims: per epoch, GA's and each NPO
run's Model Utility beside NPO's weight 2 sigma(beta R) and log-ratio R read back from the logged
forget loss (``tofu_results.npo_weight_by_epoch``): whether the weight falls before utility does.
Reads the logs through llm/studies/tofu_results.py; never trains. Where the folder also holds
``attacks/<task>_attacks.json`` (``pipeline --attacks``), the two attacks' claims from the literature
(relearning, int4 quantization) are rows too, on each method's final models. Every number is a seed mean; where more
than one seed ran it is followed by "± std" (sample std across seeds) and the row says how many.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infra.cli import parser, run
from llm.evaluate.metrics import NUMERICS
from llm.studies.tofu_results import (DEFAULT_RESULTS, FQ, MU, ResultsError, clip_suffix, curve, describe,
                                      final_point, grad_norm_by_epoch, load_results, main_runs, npo_weight_by_epoch, select)

__all__ = ["USABLE", "MEANINGFUL_FQ", "RELEARN_FACTOR", "collapse_epoch", "best_usable", "claims",
           "attack_claims", "claims_markdown", "weight_rows", "weights_markdown", "main"]

PROG = "python -m llm claims"
USABLE = 0.5   # "comparable utility": an epoch counts if MU >= USABLE x the initial model's MU
MEANINGFUL_FQ = 0.05   # the paper's "meaningful forgetting" line (Figs 5, 6, 8; App. E.2)
RELEARN_FACTOR = 2.0   # relearning "restores" if the held-out prob ends >= this x the retain baseline's


def _pm(mean: float, std: float, n: int) -> str:
    """``mean`` to 3 significant digits, with ``± std`` when several seeds ran."""
    return f"{mean:.3g}" + (f" ± {std:.2g}" if n > 1 and np.isfinite(std) else "")


def _pv(point: dict, key: str) -> str:
    """``_pm`` of a point dict's ``key`` (with its ``key_std`` and ``n_seeds``)."""
    return _pm(point[key], point[f"{key}_std"], point["n_seeds"])


def _seeds_note(*groups) -> str:
    n = max((len(rs) for rs in groups if rs), default=1)
    return f" [{n} seeds, mean ± std]" if n > 1 else ""


def _mu_path(runs):
    c = curve(runs, MU)
    return c.epochs, c.mean


def collapse_epoch(runs) -> float | None:
    """First epoch at which the seed-mean MU falls below half the initial MU (None: never)."""
    epochs, mu = _mu_path(runs)
    below = [e for e, m in zip(epochs, mu) if m < USABLE * mu[0]]
    return float(below[0]) if below else None


def best_usable(runs) -> dict | None:
    """The highest-FQ evaluation (seed means, after step 0, earliest on ties) whose seed-mean MU is
    at least USABLE x the initial MU: {"epoch", "step", "forget_quality", "model_utility", their
    "_std"s, "n_seeds"}; None when no epoch keeps that utility. Also Fig. 7's choice of epoch."""
    fq, mu = curve(runs, FQ), curve(runs, MU)
    ok = [i for i in range(len(fq.steps)) if fq.steps[i] > 0 and mu.mean[i] >= USABLE * mu.mean[0]]
    if not ok:
        return None
    i = max(ok, key=lambda j: (fq.mean[j], -j))
    return {"epoch": float(fq.epochs[i]), "step": int(fq.steps[i]), "forget_quality": float(fq.mean[i]),
            "model_utility": float(mu.mean[i]), "forget_quality_std": float(fq.std[i]),
            "model_utility_std": float(mu.std[i]), "n_seeds": fq.n_seeds}


def _usable_text(b: dict | None) -> str:
    if b is None:
        return "none"
    return (f"{_pv(b, 'forget_quality')} "
            f"(MU {_pv(b, 'model_utility')}, epoch {b['epoch']:g})")


def claims(runs) -> list[dict]:
    """One row per claim of the issue: what was measured and whether the paper's claim holds."""
    rows = []
    for task in ("forget05", "forget10"):
        g = main_runs(runs, task)
        if all(m in g for m in ("GA", "GA+RT", "NPO", "NPO+RT")):
            mu0 = curve(g["NPO"], MU).mean[0]
            points = {m: final_point(g[m]) for m in ("GA", "GA+RT", "NPO", "NPO+RT")}
            final = {m: p["model_utility"] for m, p in points.items()}
            when = {m: collapse_epoch(g[m]) for m in final}
            holds = (max(final["GA"], final["GA+RT"]) < min(final["NPO"], final["NPO+RT"]) and
                     all(when[m] is not None and (when["NPO"] is None or when[m] <= when["NPO"])
                         for m in ("GA", "GA+RT")))
            rows.append({"claim": f"{task}: GA and GA+RT collapse while NPO degrades slowly",
                         "measured": f"MU initial {mu0:.3g}; last epoch " +
                         ", ".join(f"{m} {_pv(p, 'model_utility')}"
                                   for m, p in points.items()) +
                         "; MU < half initial from epoch " +
                         ", ".join(f"{m} {'never' if e is None else f'{e:g}'}" for m, e in when.items()) +
                         _seeds_note(*(g[m] for m in points)),
                         "holds": holds})
    g = main_runs(runs, "forget10")
    if all(m in g for m in ("GA", "GA+RT", "NPO+RT")):
        best = {m: best_usable(g[m]) for m in ("GA", "GA+RT", "NPO+RT")}
        npo = best["NPO+RT"]
        holds = npo is not None and all(best[m] is None or npo["forget_quality"] > best[m]["forget_quality"]
                                        for m in ("GA", "GA+RT"))
        rows.append({"claim": "forget10: NPO+RT reaches a higher FQ than GA/GA+RT at comparable utility",
                     "measured": "best FQ with MU >= half initial: " + ", ".join(
                         f"{m} {_usable_text(b)}" for m, b in best.items()) +
                     _seeds_note(*(g[m] for m in best)),
                     "holds": bool(holds)})
    for task in ("forget20", "forget30"):
        g = main_runs(runs, task)
        if "NPO+RT" in g and len(g) > 1:
            best = {m: best_usable(rs) for m, rs in g.items()}
            above = [m for m, b in best.items() if b is not None and b["forget_quality"] > MEANINGFUL_FQ]
            rows.append({"claim": f"{task} (App. E.2): NPO+RT is the only method with FQ > {MEANINGFUL_FQ:g}",
                         "measured": "best FQ with MU >= half initial: " + ", ".join(
                             f"{m} {_usable_text(b)}" for m, b in best.items()) +
                         f"; above {MEANINGFUL_FQ:g}: {', '.join(above) or 'none'}" +
                         _seeds_note(*g.values()),
                         "holds": above == ["NPO+RT"]})
    rs1 = select(runs, task="forget50", method="NPO+RT", rt_weight=1.0)
    rs5 = select(runs, task="forget50", method="NPO+RT", rt_weight=5.0)
    if rs1 and rs5:
        a, b = final_point(rs1), final_point(rs5)
        rows.append({"claim": "forget50: a larger RT weight (5 vs 1) raises NPO+RT's utility",
                     "measured": f"last epoch MU {_pv(a, 'model_utility')} "
                                 f"(RT 1) vs {_pv(b, 'model_utility')} "
                                 f"(RT 5); FQ {_pv(a, 'forget_quality')} vs "
                                 f"{_pv(b, 'forget_quality')}" +
                                 _seeds_note(rs1, rs5),
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
                         f"{w:g}: {_pv(p, 'model_utility')} / "
                         f"{_pv(p, 'forget_quality')}"
                         for w, p in last.items()) + _seeds_note(*by_weight.values()),
                     "holds": all(b >= a for a, b in zip(mus, mus[1:]))})
    rs90 = select(runs, task="forget90", method="NPO+RT", rt_weight=12.0)
    if rs5 or rs90:
        parts = []
        for name, rs in (("forget50 RT 5", rs5), ("forget90 RT 12", rs90)):
            if rs:
                p = final_point(rs)
                parts.append(f"{name}: FQ {_pv(p, 'forget_quality')}, "
                             f"MU {_pv(p, 'model_utility')}")
        ok = all(final_point(rs)["forget_quality"] > 0.05 for rs in (rs5, rs90) if rs)
        rows.append({"claim": "forget50/90 (Fig. 8): NPO+RT with RT weight 5 / 12 keeps FQ > 0.05",
                     "measured": "; ".join(parts) + " (last epoch)" + _seeds_note(rs5, rs90), "holds": ok})
    return rows


def attack_claims(doc: dict) -> list[dict]:
    """The attacks' claims on one attacks file (llm/studies/attacks.py), each method's final models
    (mean over seeds): relearning restores the held-out half's answers (the answer probability
    after K steps is >= RELEARN_FACTOR x what the same attack teaches the retain model), and int4
    restores forgotten answers (some method's forget probability moves at least halfway from its
    unquantized value to the quantized target's)."""
    task, models = doc["forget"], doc["models"]
    finals: dict[str, list[dict]] = {}
    for name, m in models.items():
        if m["role"] == "method" and m.get("variant", "final") == "final":
            finals.setdefault(m.get("method", name), []).append(m)
    if not finals or "retain" not in models:
        return []
    after = {k: [m["relearn"]["recovery"]["heldout"]["prob"]["after"] for m in ms] for k, ms in finals.items()}
    base = models["retain"]["relearn"]["recovery"]["heldout"]["prob"]["after"]
    steps = doc["relearn"]["steps"]
    seeds = _seeds_note(*finals.values())
    stat = lambda v: _pm(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
    rows = [{"claim": f"{task}: {steps} relearning steps on half the forget authors restore the other half's "
                      f"answers (Hu et al. 2025: held-out answer prob >= {RELEARN_FACTOR:g}x the retain "
                      f"model's after the same attack)",
             "measured": "held-out answer prob after relearning: " +
                         ", ".join(f"{k} {stat(v)}" for k, v in after.items()) + f"; retain baseline {base:.3g}" + seeds,
             "holds": all(np.mean(v) >= RELEARN_FACTOR * base for v in after.values())}]
    scheme = "int4" if "int4" in doc["schemes"] else (doc["schemes"] or [None])[0]
    if scheme and "target" in models:
        target = models["target"]["eval"][scheme]["forget_Q_A_Prob"]
        moved = {}
        for k, ms in finals.items():
            before = np.mean([m["eval"]["none"]["forget_Q_A_Prob"] for m in ms])
            quant = np.mean([m["eval"][scheme]["forget_Q_A_Prob"] for m in ms])
            moved[k] = (before, quant, (quant - before) / (target - before) if target != before else 0.0)
        rows.append({"claim": f"{task}: {scheme} quantization restores forgotten answers (Zhang et al. 2025: "
                              f"forget prob at least halfway back to the quantized target's)",
                     "measured": f"forget answer prob before -> after {scheme}: " +
                                 ", ".join(f"{k} {b:.2g} -> {q:.2g}" for k, (b, q, _) in moved.items()) +
                                 f"; target after {scheme} {target:.3g}" + seeds,
                     "holds": any(f >= 0.5 for _, _, f in moved.values())})
    return rows


def weight_rows(runs) -> list[dict]:
    """Per task (forget05, forget10) and seed-mean: GA's MU and gradient norm, and for each NPO beta
    (no retain term) its MU, weight and log-ratio (see ``npo_weight_by_epoch``) and gradient norm
    by epoch (where the logs hold it). Runs of the clipping ablation (tag ``no_clip``) are rows of
    their own."""
    rows = []

    def per_epoch(group, label, task, fn, keys):
        per_seed = [fn(r) for r in group]
        for key, name in keys:
            values = np.mean([w[key] for w in per_seed], axis=0)
            rows.append({"task": task, "method": label, "quantity": name,
                         "values": [None] + [float(v) for v in values]})  # nothing before step 1

    for task in ("forget05", "forget10"):
        ga = select(runs, task=task, method="GA")
        npo = select(runs, task=task, method="NPO")
        if not ga or not npo:
            continue
        groups = [("GA", [r for r in ga if clip_suffix(r) == c], c) for c in sorted({clip_suffix(r) for r in ga})]
        groups += [(f"NPO β={b:g}", [r for r in npo if float(r.knobs["beta"]) == b and clip_suffix(r) == c], c)
                   for c in sorted({clip_suffix(r) for r in npo}) for b in sorted({float(r.knobs["beta"]) for r in npo})]
        for name, group, clip in groups:
            if not group:
                continue
            label = name + clip
            rows.append({"task": task, "method": label, "quantity": "MU", "values": list(curve(group, MU).mean)})
            if name != "GA":
                per_epoch(group, label, task, npo_weight_by_epoch, (("weight", "W ≤"), ("log_ratio", "R ≤ (nats)")))
            if all(any("grad_norm" in row for row in r.train) for r in group):
                per_epoch(group, label, task, grad_norm_by_epoch, (("grad_norm", "‖∇‖ median"),))
    if not rows:
        raise ResultsError("no GA and NPO runs on forget05/forget10 in the results; rerun "
                           "'python -m llm pipeline --methods GA NPO'")
    return rows


def weights_markdown(rows, source: str = "") -> str:
    n = max(len(r["values"]) for r in rows)
    lines = [f"Measured on: {source}" if source else "", "",
             "| task | method | quantity | " + " | ".join(f"ep {e}" for e in range(n)) + " |",
             "|---|---|---|" + "---|" * n]
    for r in rows:
        cells = ["–" if v is None or not np.isfinite(v) else f"{v:.3g}" for v in r["values"]]
        lines.append(f"| {r['task']} | {r['method']} | {r['quantity']} | " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def claims_markdown(runs, source: str = "", extra=()) -> str:
    lines = [f"Measured on: {source}" if source else "", "",
             "| claim (paper) | measured | holds here? |", "|---|---|---|"]
    for r in [*claims(runs), *extra]:
        lines.append(f"| {r['claim']} | {r['measured']} | {'yes' if r['holds'] else 'no'} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv=None) -> int:
    p = parser(PROG, __doc__)
    p.add_argument("--from-results", default=str(DEFAULT_RESULTS),
                   help="pipeline result directory (manifest.json + runs/)")
    p.add_argument("--numerics", default="exact", choices=NUMERICS,
                   help="the evaluation numerics the results must have been made with")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="check claims on a result folder whose pipeline stopped before its last run")
    p.add_argument("--weights", action="store_true",
                   help="print NPO's weight and log-ratio by epoch beside GA's and NPO's utility instead")
    return run(PROG, _main, p.parse_args(argv), user_errors=(ResultsError,))


def _attack_rows(results) -> list[dict]:
    from llm.studies.attacks import read_attacks
    rows = []
    for path in sorted((Path(results) / "attacks").glob("*_attacks.json")):   # not an older run's <task>.json
        try:
            rows += attack_claims(read_attacks(path))
        except ValueError as e:
            raise ResultsError(str(e)) from None
    return rows


def _main(args) -> int:
    runs = load_results(args.from_results, args.numerics, args.allow_incomplete)
    if args.weights:
        rows = weight_rows(runs)
        print(json.dumps(rows, indent=2) if args.json else weights_markdown(rows, describe(args.from_results)),
              end="\n" if args.json else "")
        return 0
    extra = _attack_rows(args.from_results)
    if all(r.meta.get("tag") for r in runs) and not extra:   # e.g. a --clip-ablation folder
        raise ResultsError(f"no claim can be checked on {args.from_results}: the claims read the main "
                           f"grid's runs (an ablation-only folder has none); use --weights for its "
                           f"per-epoch table")
    if args.json:
        print(json.dumps(claims(runs) + extra, indent=2))
    else:
        print(claims_markdown(runs, describe(args.from_results), extra), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
