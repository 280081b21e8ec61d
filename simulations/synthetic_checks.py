"""Section 4's claims (paper-digest section 3) checked against our Figure 3/4/9 runs.

Each row: the claim, the paper's value, ours, the tolerance and pass/fail, with per-seed values.
Forget-distance claims are judged on the median over seeds (one seed of five typically has a
retrained model that puts P(y=1) ~ 0.07 on the forget region, so its forget distance bottoms out
near 0.1 and rebounds; the authors' own code shows the same); retain distance and forget KL on the
mean over seeds, as the paper plots them. Steps are eval steps (every 25; paper markers every 100).
"""
from __future__ import annotations

import numpy as np


def _row(claim, paper, measured, tolerance, passed, per_seed=""):
    return {"claim": claim, "paper": paper, "measured": measured, "tolerance": tolerance,
            "passed": None if passed is None else bool(passed), "per_seed": per_seed}


def _fmt(values, digits=3) -> str:
    return "[" + " ".join(f"{v:.{digits}g}" for v in np.atleast_1d(values)) + "]"


class _Curves:
    """Access to one alpha of a Figure 4 result by method name and step."""

    def __init__(self, res: dict, alpha: float):
        self.a = int(np.flatnonzero(np.isclose(res["alphas"], alpha))[0])
        self.res, self.steps = res, res["steps"]
        self.methods = [str(m) for m in res["methods"]]

    def per_seed(self, metric, method, step=None):
        x = self.res[metric][self.a, :, :, self.methods.index(method)]  # (S, T)
        return x if step is None else x[:, self.at(step)]

    def at(self, step) -> int:
        return int(np.argmin(np.abs(self.steps - step)))

    def median(self, metric, method, step=None):
        return np.median(self.per_seed(metric, method, step), axis=0)

    def mean(self, metric, method, step=None):
        return self.per_seed(metric, method, step).mean(axis=0)

    def first_below(self, curve, level):
        hit = np.flatnonzero(curve < level)
        return int(self.steps[hit[0]]) if hit.size else None

    def has(self, *methods) -> bool:
        return all(m in self.methods for m in methods)


def fig4_checks(res: dict) -> list[dict]:
    rows = []
    c = _Curves(res, 1.0)
    fd0 = c.per_seed("fd", c.methods[0], 0)
    rows.append(_row("alpha=1 start forget distance (step 0, median)", "1.70",
                     f"{np.median(fd0):.3f} (mean {fd0.mean():.3f})", "|x - 1.70| <= 0.25",
                     abs(np.median(fd0) - 1.70) <= 0.25, _fmt(fd0)))
    rd0 = c.per_seed("rd", c.methods[0], 0)
    rows.append(_row("alpha=1 start retain distance (step 0, mean)", "0.02 (0.015 in Fig 4a2)",
                     f"{rd0.mean():.4f}", "0.01 <= x <= 0.03", 0.01 <= rd0.mean() <= 0.03, _fmt(rd0)))
    for method, limit in (("NPO", (0, 300)), ("NPO+RT", (0, 300)), ("DPO+RT", (0, 200)),
                          ("GA", (700, 1200)), ("GA+RT", (700, 1200))):
        if not c.has(method):
            continue
        step = c.first_below(c.median("fd", method), 0.1)
        seeds = [c.first_below(x, 0.1) for x in c.per_seed("fd", method)]
        paper = {"NPO": "by 300 (0.05 at 200)", "NPO+RT": "by 300 (0.05 at 200)",
                 "DPO+RT": "by 200 (0.03 at 100)"}.get(method, "~900-1000 (0.09 at 900)")
        rows.append(_row(f"{method}: first step with median FD < 0.1", paper, str(step),
                         f"{limit[0]} <= step <= {limit[1]}",
                         step is not None and limit[0] <= step <= limit[1],
                         "[" + " ".join(str(s) for s in seeds) + "]"))
    if c.has("GA"):
        rd = c.mean("rd", "GA")
        cross = next((int(s) for s, v in zip(c.steps, rd) if v > 0.05), None)
        flat = rd[c.at(600)] <= 1.5 * rd[0]
        rows.append(_row("GA: retain distance explodes after ~800 steps (mean RD first > 0.05)",
                         "~800 (0.053 at 800, 0.27 at 1100)",
                         f"{cross} (RD {rd[c.at(600)]:.3f} at 600, {rd[c.at(1100)]:.3f} at 1100)",
                         "650 <= step <= 1000 and RD(600) <= 1.5 RD(0)",
                         cross is not None and 650 <= cross <= 1000 and flat,
                         _fmt(c.per_seed("rd", "GA", 1100))))
    if c.has("NPO"):
        rd = c.mean("rd", "NPO")
        early, late = rd[c.at(1000)] - rd[0], rd[-1] - rd[c.at(1000)]
        rows.append(_row("NPO: retain distance saturates (rise 1000->1975 / rise 0->1000)",
                         "0.17 (0.015 -> 0.15 -> 0.173)",
                         f"{late / early:.2f} ({rd[0]:.3f} -> {rd[c.at(1000)]:.3f} -> {rd[-1]:.3f})",
                         "ratio <= 0.35", late <= 0.35 * early, _fmt(c.per_seed("rd", "NPO", c.steps[-1]))))
    if c.has("NPO+RT"):
        rd = c.mean("rd", "NPO+RT")
        rows.append(_row("NPO+RT: retain distance stays near its start (max over steps)",
                         "0.015-0.017", f"{rd.max():.4f} (start {rd[0]:.4f})", "max <= start + 0.01",
                         rd.max() <= rd[0] + 0.01, _fmt(c.per_seed("rd", "NPO+RT").max(axis=1))))
    if c.has("IDK+RT"):
        fd = c.median("fd", "IDK+RT")
        rows.append(_row("IDK+RT: forget distance plateaus far from zero (median at 1975)",
                         "0.81-0.83", f"{fd[-1]:.3f} (at 1000: {fd[c.at(1000)]:.3f})",
                         "x >= 0.5 and |x - FD(1000)| <= 0.1",
                         fd[-1] >= 0.5 and abs(fd[-1] - fd[c.at(1000)]) <= 0.1,
                         _fmt(c.per_seed("fd", "IDK+RT", c.steps[-1]))))
    others = [m for m in c.methods if m != "IDK+RT"]
    best = {m: np.median(c.per_seed("fd", m)[:, :c.at(1200) + 1].min(axis=1)) for m in others}
    p1 = res["retr_forget_p1"][c.a]
    rows.append(_row("all but IDK+RT reach FD < 0.005 within 1200 steps (median of per-seed minimum)",
                     "< 0.005", " ".join(f"{m} {v:.4f}" for m, v in best.items()), "each < 0.005",
                     all(v < 0.005 for v in best.values()),
                     "; ".join(f"{m} {_fmt(c.per_seed('fd', m)[:, :c.at(1200) + 1].min(axis=1), 2)}"
                               for m in others)
                     + f"; retrained P(y=1) on the forget region {_fmt(p1, 2)}: the minimum FD a seed can"
                       " reach grows with it, so the median is the third-best seed"))
    rows += _value_rows(c, "rd", "mean", {"NPO": {400: 0.115, 1000: 0.15, 1900: 0.173},
                                          "GA+RT": {1500: 0.134, 1900: 0.222},
                                          "DPO+RT": {1900: 0.038}, "NPO+RT": {1900: 0.016}},
                        "Fig 4a2 retain distance", 0.35)
    rows += _value_rows(c, "fkl", "mean", {"GA": {1900: 24.0}, "NPO": {1900: 4.6}, "DPO+RT": {1900: 5.6},
                                           "IDK+RT": {1900: 0.1}}, "Fig 9a forget KL", 0.35)
    if 0.0 in res["alphas"]:
        c0 = _Curves(res, 0.0)
        fd0 = c0.per_seed("fd", c0.methods[0], 0)
        rows.append(_row("alpha=0 start forget distance (median)", "0.059", f"{np.median(fd0):.4f}",
                         "0.03 <= x <= 0.09", 0.03 <= np.median(fd0) <= 0.09, _fmt(fd0)))
        paper_order = [m for m in ("NPO+RT", "DPO+RT", "NPO", "IDK+RT", "GA+RT", "GA") if c0.has(m)]
        final = {m: float(c0.median("fd", m)[-1]) for m in paper_order}
        ours = sorted(final, key=final.get)
        rows.append(_row("alpha=0 Fig 4b final forget distance, best to worst (median)",
                         "NPO+RT 0.016 < DPO+RT 0.023 < NPO 0.038 < IDK+RT 0.066 < GA+RT 0.125 < GA 0.173",
                         " < ".join(f"{m} {final[m]:.3f}" for m in ours), "same order",
                         ours == paper_order,
                         "; ".join(f"{m} {_fmt(c0.per_seed('fd', m, c0.steps[-1]))}" for m in paper_order)))
        rows += _value_rows(c0, "fkl", "mean", {"NPO": {1900: 0.072}, "NPO+RT": {1900: 0.051},
                                                "DPO+RT": {1900: 0.058}, "GA": {1800: 0.2},
                                                "GA+RT": {1900: 0.183}}, "Fig 9b forget KL (alpha=0)", 0.35)
    grad = res["fit_grad_norm"]
    rows.append(_row("reference/retrained fits converged (final gradient norm)", "< 1e-2 (authors' check)",
                     f"max {grad.max():.2g}", "< 1e-2", grad.max() < 1e-2, _fmt(grad.max(axis=-1).ravel(), 2)))
    ga_min = c.per_seed("fd", c.methods[0]).min(axis=1)
    rows.append(_row("(info) per-seed retrained-model mean P(y=1) on the forget region; min FD of "
                     f"{c.methods[0]}", "-",
                     f"outlier seeds: {[int(s) for s, v in zip(res['seeds'], ga_min) if v > 0.05]}",
                     "-", None, f"P {_fmt(p1, 2)} minFD {_fmt(ga_min, 2)}"))
    return rows


def _value_rows(c: _Curves, metric: str, stat: str, table: dict, what: str, rel: float) -> list[dict]:
    rows = []
    for method, points in table.items():
        if not c.has(method):
            continue
        curve = getattr(c, stat)(metric, method)
        got = {s: float(curve[c.at(s)]) for s in points}
        ok = all(abs(got[s] - v) <= rel * v for s, v in points.items())
        rows.append(_row(f"{what}: {method} ({stat} over seeds) at steps {list(points)}",
                         " ".join(f"{v:g}" for v in points.values()),
                         " ".join(f"{got[s]:.3g}" for s in points), f"within {rel:.0%}", ok,
                         _fmt(c.per_seed(metric, method, list(points)[-1]))))
    return rows


def rd_at_fd(fd, rd, level: float) -> float:
    """Retain distance where the forget distance first falls to ``level`` (linear interpolation)."""
    hit = np.flatnonzero(fd <= level)
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(rd[0])
    w = (fd[i - 1] - level) / (fd[i - 1] - fd[i])
    return float(rd[i - 1] + w * (rd[i] - rd[i - 1]))


def fig3_checks(res: dict, level: float = 0.15) -> list[dict]:
    """Fig 3: NPO(beta) approaches GA as beta -> 0 and lies lower for larger beta.

    Judged like the paper's figure, on the seed-averaged curves (mean FD and mean RD per step),
    read at the first step where the mean forget distance falls to ``level``. Per seed the curves
    are much closer together; the rows show that spread too.
    """
    labels = [str(m) for m in res["methods"]]
    fd, rd = res["fd"][0], res["rd"][0]  # (S, T, M)
    mean = np.array([rd_at_fd(fd.mean(0)[:, j], rd.mean(0)[:, j], level) for j in range(len(labels))])
    per_seed = np.array([[rd_at_fd(fd[s, :, j], rd[s, :, j], level) for j in range(len(labels))]
                         for s in range(fd.shape[0])])
    spread = np.nanmax(np.abs(per_seed - per_seed[:, :1]), axis=1)
    ga = mean[0]
    rows = [_row(f"Fig 3: {labels[1]} ~ GA (RD where the seed-mean FD first <= {level})",
                 "beta=0.01 ~ GA", f"{mean[1]:.4f} vs GA {ga:.4f}", "|diff| <= 5% of GA",
                 abs(mean[1] - ga) <= 0.05 * ga, "RD(beta)-RD(GA) " + _fmt(per_seed[:, 1] - per_seed[:, 0], 2))]
    rows.append(_row(f"Fig 3: RD at mean FD={level} decreases as beta grows (GA, beta ascending)",
                     "0.09 0.09 0.08 0.073 0.06 0.054", _fmt(mean), "strictly decreasing",
                     bool(np.all(np.diff(mean) < 0)),
                     f"per seed max |RD(beta)-RD(GA)| {_fmt(spread, 2)}; " +
                     "; ".join(f"{lab} {_fmt(per_seed[:, j], 2)}" for j, lab in enumerate(labels))))
    paper = np.array([0.09, 0.09, 0.08, 0.073, 0.06, 0.054])
    if len(mean) == len(paper):
        rel = np.abs(mean - paper) / paper
        rows.append(_row(f"Fig 3: RD values at mean FD={level}", " ".join(f"{v:g}" for v in paper),
                         _fmt(mean), "each within 35%", bool(np.all(rel <= 0.35)), "rel. diff " + _fmt(rel, 2)))
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("claim", "paper", "measured", "tolerance", "pass")
    body = [(r["claim"], r["paper"], r["measured"], r["tolerance"],
             "info" if r["passed"] is None else ("PASS" if r["passed"] else "FAIL")) for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, b in zip(rows, body):
        lines.append("| " + " | ".join(b) + " |")
        if r["per_seed"]:
            lines.append(f"|   per seed: {r['per_seed']} | | | | |")
    n_fail = sum(r["passed"] is False for r in rows)
    n_pass = sum(r["passed"] is True for r in rows)
    lines.append(f"\n{n_pass} passed, {n_fail} failed")
    return "\n".join(lines)
