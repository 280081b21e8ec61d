"""Reproduces Figure 7: answers of the unlearned models to forget, retain and real-world questions.

    python -m figures.fig7_tofu_samples [--from-results results/tofu_cpu] [--out figures/out]

Reads the pipeline's result logs, never generates: each evaluation row stores greedy answers to
the same few questions per set (``samples``: the first ``n_samples`` forget, retain and world-fact
questions, at most ``sample_tokens`` new tokens; llm/pipeline/run.py). Task forget10 (the only task on
which the cpu preset runs IDK+RT and DPO+RT); methods GA+RT, IDK+RT, DPO+RT and NPO+RT.

Epoch rule: each method at its best epoch at comparable utility, as the claims table picks it
(``llm.studies.tofu_claims.best_usable``: the highest seed-mean Forget Quality among the epochs whose
seed-mean Model Utility is at least half the initial one); a method with no such epoch is shown at
its peak-FQ epoch (``llm.studies.tofu_results.best_point``) and marked so. Answers are those of the
lowest seed. The figure shows the first FIGURE_PER_SET questions of each set at one-column width
(text at ``figures.style.TABLE_FONTSIZE``, wrapped); ``fig7_tofu_samples.md`` beside it holds
every stored question. Writes ``fig7_tofu_samples.png/.pdf/.md``.
"""
from __future__ import annotations

import textwrap

from figures.cli import figure_main
from figures.style import ONE_COLUMN, TABLE_FONTSIZE, chars_per_inch, figure, method_style, save
from infra.files import write_text
from llm.studies import tofu_results as tr
from llm.studies.tofu_claims import best_usable

#: drawn by ``python -m figures --from-results DIR`` (it reads a result folder's logs)
DRAWS_FROM_RESULTS = True

TASK = "forget10"
METHODS = ["GA+RT", "IDK+RT", "DPO+RT", "NPO+RT"]
SETS = {"forget": "Forget", "retain": "Retain", "real_world": "Real world"}
FIGURE_PER_SET = 1
EMPTY = "(empty)"
# layout, in inches
PAD, NAME_COL, GAP = 0.06, 0.62, 0.05
LINE = TABLE_FONTSIZE * 1.25 / 72


def compute(runs) -> dict:
    groups = tr.main_runs(runs, TASK)
    present = [m for m in METHODS if m in groups]
    tr.require(present, f"{TASK} {'/'.join(METHODS)}", f"--tasks {TASK} --methods {' '.join(METHODS)}")
    chosen, answers = {}, {}
    for m in present:
        point, rule = best_usable(groups[m]), "best FQ at MU >= half initial"
        if point is None:
            point, rule = tr.best_point(groups[m]), "peak FQ (no epoch keeps half the utility)"
        run = min(groups[m], key=lambda r: r.seed)
        chosen[m] = {"epoch": point["epoch"], "step": point["step"], "rule": rule, "seed": run.seed,
                     "forget_quality": point["forget_quality"], "model_utility": point["model_utility"]}
        answers[m] = {(s["set"], s["question"]): s for s in tr.samples(run, point["step"])}
    questions = []
    for key, s in answers[present[0]].items():
        if key[0] in SETS:
            questions.append({"set": key[0], "question": s["question"], "answer": s.get("answer", ""),
                              "generated": {m: _text(answers[m].get(key, {}).get("generated"))
                                            for m in present}})
    questions.sort(key=lambda q: list(SETS).index(q["set"]))   # stable: stored order within a set
    if not questions:
        tr.require([], f"{TASK} sample answers", f"--tasks {TASK} (the logs store no samples)")
    return {"task": TASK, "methods": chosen, "questions": questions}


def _text(s) -> str:
    s = " ".join((s or "").split())
    return s or EMPTY


def shown(data) -> list[dict]:
    """The questions the figure draws: the first FIGURE_PER_SET of each set."""
    out, count = [], {}
    for q in data["questions"]:
        count[q["set"]] = count.get(q["set"], 0) + 1
        if count[q["set"]] <= FIGURE_PER_SET:
            out.append(q)
    return out


def _wrap(text: str, inches: float) -> str:
    return "\n".join(textwrap.wrap(text, width=max(10, int(inches * chars_per_inch())),
                                   break_long_words=True, break_on_hyphens=False)) or EMPTY


def plot(data, out_dir):
    width, body = ONE_COLUMN, ONE_COLUMN - 2 * PAD - NAME_COL - GAP
    full = ONE_COLUMN - 2 * PAD
    title = _wrap(f"TOFU {data['task']}: answers at each method's chosen epoch ({data['source']}); " +
                  ", ".join(f"{m} epoch {c['epoch']:g}" + ("*" if c["rule"].startswith("peak") else "")
                            for m, c in data["methods"].items()), full)
    # rows of cells (x, wrapped text, gid, text kwargs), top to bottom; each row's y follows its height
    rows = [[(PAD, title, "title", dict(fontweight="bold"))]]
    for i, q in enumerate(shown(data)):
        rows.append([(PAD, _wrap(f"{SETS[q['set']]}: {q['question']}", full), f"question:{i}",
                      dict(fontweight="bold"))])
        rows.append([(PAD, _wrap(f"True answer: {_text(q['answer'])}", full), f"truth:{i}",
                      dict(color="0.35", style="italic"))])
        for m, text in q["generated"].items():
            rows.append([(PAD, m, f"name:{i}:{m}", dict(fontweight="bold", color=method_style(m)["color"])),
                         (PAD + NAME_COL + GAP, _wrap(text, body), f"cell:{i}:{m}", {})])
    footnote = "* no epoch keeps half the initial utility: peak-FQ epoch" \
        if any(c["rule"].startswith("peak") for c in data["methods"].values()) else ""
    if footnote:
        rows.append([(PAD, _wrap(footnote, full), "footnote", dict(color="0.35"))])
    heights = [max(t.count("\n") + 1 for _, t, _, _ in row) * LINE + 0.03 for row in rows]
    height = sum(heights) + 2 * PAD
    fig, axes = figure(width=width, height=height)
    fig.set_layout_engine("none")
    ax = axes[0][0]
    ax.set_position([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    y = PAD
    for row, h in zip(rows, heights):
        if row[0][2].startswith("question:"):
            ax.axhline(y - 0.015, color="0.7", linewidth=0.5)
        for x, text, gid, kw in row:
            ax.text(x, y, text, va="top", ha="left", fontsize=TABLE_FONTSIZE, gid=gid, parse_math=False,
                    linespacing=1.05, **kw)
        y += h
    paths = save(fig, out_dir, "fig7_tofu_samples")
    md = out_dir / "fig7_tofu_samples.md"
    write_text(md, markdown(data))
    return paths + [md]


def markdown(data) -> str:
    methods = list(data["methods"])
    lines = [f"# Figure 7: TOFU {data['task']} sample answers ({data['source']})", "",
             "Greedy answers stored in the result logs, each method at its chosen epoch (lowest seed):", ""]
    for m, c in data["methods"].items():
        lines.append(f"* {m}: epoch {c['epoch']:g} (step {c['step']}, seed {c['seed']}), {c['rule']}; "
                     f"FQ {c['forget_quality']:.3g}, MU {c['model_utility']:.3g}")
    lines += ["", "| set | question | true answer | " + " | ".join(methods) + " |",
              "|" + "---|" * (3 + len(methods))]
    for q in data["questions"]:
        cells = [SETS[q["set"]], q["question"], _text(q["answer"])] + [q["generated"][m] for m in methods]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(s: str) -> str:
    return " ".join(str(s).split()).replace("\\", "\\\\").replace("|", "\\|")


def main(argv=None) -> int:
    return figure_main(argv, inputs="tofu", prog="python -m figures.fig7_tofu_samples", doc=__doc__,
                       compute=compute, plot=plot)


if __name__ == "__main__":
    raise SystemExit(main())
