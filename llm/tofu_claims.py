"""The paper's TOFU claims, measured on whatever pipeline results are given.

    python -m llm.tofu_claims [--from-results results/tofu_cpu] [--json]

Prints the claims table (claim | measured | holds here?) of docs/results.md, or one JSON list.
Reads the logs through llm/tofu_results.py; never trains.
"""
from __future__ import annotations

import json

import numpy as np

from infra.cli import parser, run
from llm.tofu_results import (DEFAULT_RESULTS, FQ, MU, ResultsError, curve, describe, final_point,
                              load_results, main_runs, select)

__all__ = ["USABLE", "collapse_epoch", "best_usable_fq", "claims", "claims_markdown", "main"]

PROG = "python -m llm.tofu_claims"
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
    p = parser(PROG, __doc__)
    p.add_argument("--from-results", default=str(DEFAULT_RESULTS),
                   help="pipeline result directory (manifest.json + runs/)")
    return run(PROG, _main, p.parse_args(argv), user_errors=(ResultsError,))


def _main(args) -> int:
    runs = load_results(args.from_results)
    if args.json:
        print(json.dumps(claims(runs), indent=2))
    else:
        print(claims_markdown(runs, describe(args.from_results)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
