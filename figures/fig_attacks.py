"""Is it really forgotten? Recovery after relearning, per method, and forget metrics before and after
int4 quantization.

    python -m llm attacks ... --out FILE        (or python -m llm pipeline --attacks)
    python -m figures.fig_attacks [--attacks FILE] [--table] [--json]

Reads the attacks file (llm/studies/attacks.py ``read_attacks``); computes nothing. Left panel: answer
probability on the relearned half of the forget set against relearning steps; right: on the
held-out half (recovered by transfer). Two lines per unlearned method when the pipeline wrote the
file: its final models (the method's style) and its best-Forget-Quality epochs' models (the method's
colour, dash-dot-dot, hollow markers, labelled with each seed's epoch; "= target" when that is
epoch 0); several seeds are their mean with their range shaded; the retain model (the baseline: a
model that never learned the forget set) dashed grey, the target dotted. ``--table`` prints "FQ /
forget ROUGE / forget prob / MU before and after" each quantization scheme and the held-out
recovery as markdown, one row per model. Without ``--attacks`` and with no file at the default path it says so and draws
nothing (exit 0), so that ``python -m figures`` runs before any attack has.
Writes ``fig_attacks.png/.pdf``.
"""
from __future__ import annotations

from pathlib import Path

from llm.studies.attacks import read_attacks

from figures.cli import figure_main
from figures.style import BAND_ALPHA, TWO_COLUMN, figure, method_style, save

STEM = "fig_attacks"
PROG = "python -m figures.fig_attacks"
#: the committed file (python -m llm pipeline ... --attacks --out results/tofu_cpu_attacks; README)
DEFAULT_ATTACKS = Path(__file__).resolve().parents[1] / "results" / "tofu_cpu_attacks" / "attacks" / "forget10_attacks.json"
HALVES = (("relearn", "relearned half"), ("heldout", "held-out half (transfer)"))
METRIC, METRIC_LABEL = "prob", "answer probability"
BEST_FQ_DASHES = (0, (4, 1, 1, 1, 1, 1))   # dash-dot-dot: the methods' own styles are -, --, -., :


def _style(name: str, m: dict) -> dict:
    if m["role"] == "retain":
        return dict(color="0.45", linestyle="--")
    if m["role"] == "target":
        return dict(color="black", linestyle=":")
    style = method_style(m.get("method") or name)
    if m.get("variant") == "best_fq":   # the method's colour, hollow markers, a dash no method uses
        style.update(linestyle=BEST_FQ_DASHES, markerfacecolor="none")
    return style


def label(name: str, m: dict) -> str:
    """A model's name in the legend and the table: the reference's role, or the best-FQ epoch."""
    if m["role"] == "retain":
        return f"{name} (baseline)"
    if m["role"] == "target":
        return f"{name} (reference)"
    if m.get("variant") == "best_fq":
        return f"{name} (epoch {m['epoch']:g}{' = target' if m.get('model') == 'target' else ''})"
    return name


def models(doc: dict) -> list[tuple[str, dict]]:
    """The file's models in display order: per method and seed the final then the best-FQ model,
    then the retain model and the target (the file itself stores them sorted by name)."""
    def key(item):
        name, m = item
        return ({"method": 0, "retain": 1}.get(m["role"], 2), m.get("method") or name, m.get("seed", 0),
                m.get("variant") == "best_fq", name)
    return sorted(doc["models"].items(), key=key)


def _group(name: str, m: dict) -> str:
    """The legend entry a model belongs to: the seeds of one method and variant share a line."""
    if m["role"] != "method" or "method" not in m:
        return label(name, m)
    if m.get("variant") != "best_fq":
        return f"{m['method']} final"
    return f"{m['method']} best-FQ"


def curves(doc: dict) -> dict:
    """{legend label: {"role", "style", "steps", "seeds", half: mean per step, half_lo / half_hi:
    min / max over seeds}}: exactly what the figure draws. A pipeline file has one model per seed;
    its seeds are one line (their mean) and a band (their range), the best-FQ line labelled with
    each seed's epoch."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for name, m in models(doc):
        groups.setdefault(_group(name, m), []).append((name, m))
    out = {}
    for key, members in groups.items():
        name, first = members[0]
        if first.get("variant") == "best_fq":
            epochs = ", ".join(f"{m['epoch']:g}{' = target' if m.get('model') == 'target' else ''}"
                               for _, m in members)
            key = f"{key} (epoch{'s' if len(members) > 1 else ''} {epochs})"
        steps = [r["step"] for r in first["relearn"]["curve"]]
        entry = {"role": first["role"], "style": _style(name, first), "steps": steps, "seeds": len(members)}
        for half, _ in HALVES:
            per_seed = [[r[half][METRIC] for r in m["relearn"]["curve"]] for _, m in members]
            if any(len(v) != len(steps) for v in per_seed):
                raise ValueError(f"{key}: the seeds' relearning curves have different steps")
            entry[half] = [sum(col) / len(col) for col in zip(*per_seed)]
            entry[f"{half}_lo"] = [min(col) for col in zip(*per_seed)]
            entry[f"{half}_hi"] = [max(col) for col in zip(*per_seed)]
        out[key] = entry
    return out


def plot(data: dict, out_dir) -> list[Path]:
    if data.get("missing"):
        return []
    fig, axes = figure(ncols=2, width=TWO_COLUMN, height=3.0)
    for ax, (half, title) in zip(axes[0], HALVES):
        for name, c in data["curves"].items():
            line, = ax.plot(c["steps"], c[half], label=name, **{"marker": "o", "markersize": 2.5, **c["style"]})
            if c["seeds"] > 1:
                ax.fill_between(c["steps"], c[f"{half}_lo"], c[f"{half}_hi"], color=line.get_color(),
                                alpha=BAND_ALPHA, linewidth=0)
        ax.set_yscale("log")
        ax.set_title(f"{data['forget']}: {title}")
        ax.set_xlabel("relearning steps")
        ax.set_ylabel(METRIC_LABEL)
    handles, labels = axes[0][0].get_legend_handles_labels()
    # below both panels (constrained layout makes room): a legend on the axes hides the curves
    fig.legend(handles, labels, frameon=False, fontsize=6, loc="outside lower center", ncol=3)
    return save(fig, out_dir, STEM)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def table(doc: dict) -> str:
    """Markdown: per model, FQ, forget ROUGE, forget answer probability and MU unquantized and
    after each scheme; the fraction of each scheme's codes equal to the target's (files written
    with a target); relearning on the held-out half: probability before, after, baseline after,
    excess. A run's final and best-FQ models are two rows."""
    schemes = doc["schemes"]
    head = ["model"]
    for short in ("FQ", "forget ROUGE", "forget prob", "MU"):
        head += [short] + [f"{short.split()[-1]} {s}" for s in schemes]
    head += [f"{s} codes = target's" for s in schemes]
    head += ["held-out prob: before", "after relearning", "retain baseline after", "excess"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in models(doc):
        e, r = m["eval"], m["relearn"]["recovery"]["heldout"][METRIC]
        cells = [label(name, m)]
        for key in ("forget_quality", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "model_utility"):
            cells += [_f(e["none"][key])] + [_f(e[s][key]) for s in schemes]
        cells += [_f(e[s].get("quantization", {}).get("grid_vs_target", {}).get("codes_equal")) for s in schemes]
        cells += [_f(r["before"]), _f(r["after"]), _f(r.get("baseline_after")), _f(r.get("excess"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options(p) -> None:
    p.add_argument("--attacks", default=None, help=f"the attacks file (default {DEFAULT_ATTACKS})")
    p.add_argument("--table", action="store_true", help="print the before/after table as markdown")


def compute(args) -> dict:
    if args.attacks is None and not DEFAULT_ATTACKS.exists():
        return {"missing": str(DEFAULT_ATTACKS)}
    doc = read_attacks(args.attacks or DEFAULT_ATTACKS)
    return {"forget": doc["forget"], "curves": curves(doc), "_doc": doc}


def _text(data: dict, args):
    if data.get("missing"):
        return (f"no attacks file at {data['missing']}; write one with python -m llm attacks "
                f"(or python -m llm pipeline --attacks) and pass --attacks FILE")
    return table(data["_doc"]) if args.table else None


def main(argv=None) -> int:
    return figure_main(argv, prog=PROG, doc=__doc__, compute=compute, plot=plot, inputs=None,
                       options=options, text=_text)


if __name__ == "__main__":
    raise SystemExit(main())
