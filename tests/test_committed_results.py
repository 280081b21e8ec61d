"""The numbers docs/results.md prints are the ones the committed result folders give now.

Each claims table in the docs is regenerated from its committed logs (``python -m llm claims
--from-results DIR``) and must appear there line for line; the weight / log-ratio table of
"Why vanilla NPO does not outlast GA here" must match ``python -m llm claims --weights`` to its
printed precision. A re-run committed without updating the docs, or a reader change that moves a
number, fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from llm.studies import tofu_claims
from llm.studies import tofu_results as tr

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "results.md").read_text()
FOLDERS = ["results/tofu_cpu", "results/tofu_smol", "results/tofu_cpu_attacks"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_docs_claims_tables_regenerate_from_the_committed_logs(folder):
    root = REPO / folder
    md = tofu_claims.claims_markdown(tr.load_results(root), tr.describe(root), tofu_claims._attack_rows(root))
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert rows, f"{folder}: no claims"
    missing = [line for line in rows if line not in DOC]
    assert not missing, f"docs/results.md lacks {folder}'s claims rows: {missing}"


def _doc_weight_table() -> dict:
    """{(model, quantity): [ep1..ep6 values]} from the docs' two-model weight table."""
    start = DOC.index("| model (lr) | quantity | ep 1 |")
    table, model = {}, None
    for line in DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "").replace("−", "-") for c in line.strip("|").split("|")]
        model = cells[0] or model
        table[(model.split(" (")[0], cells[1])] = [float(c) for c in cells[2:]]
    return table


def _generated(folder: str) -> dict:
    rows = tofu_claims.weight_rows(tr.load_results(REPO / folder))
    out = {}
    for r in rows:
        if r["task"] != "forget10":
            continue
        key = f"{r['method']} {r['quantity']}".replace("NPO β=0.1", "NPO β 0.1")
        out[key] = r["values"][1:7]   # epochs 1..6
    return out


@pytest.mark.parametrize("model, folder", [("1 M Llama", "results/tofu_cpu"),
                                           ("SmolLM2-135M", "results/tofu_smol")])
def test_docs_weight_table_matches_claims_weights(model, folder):
    doc = {q: v for (m, q), v in _doc_weight_table().items() if m == model}
    gen = _generated(folder)
    assert set(doc) == {"GA MU", "NPO β 0.1 MU", "NPO β 0.1 W ≤", "NPO β 0.1 R ≤ (nats)"}
    for quantity, printed in doc.items():
        want = gen[quantity]
        for p, w in zip(printed, want):
            # printed to 2-3 significant digits (or 4 decimals): within 6 % or 1e-4
            assert abs(p - w) <= max(0.06 * abs(w), 1e-4), (model, quantity, printed, want)


# docs row label of the clipping-ablation table -> (folder, claims --weights method, quantity)
CLIP_ROWS = {
    "GA, clip 1.0: MU": ("results/tofu_smol", "GA", "MU"),
    "GA, no clip: MU": ("results/tofu_smol_noclip", "GA no clip", "MU"),
    "NPO β 0.1, clip 1.0: MU": ("results/tofu_smol", "NPO β=0.1", "MU"),
    "NPO β 0.1, no clip: MU": ("results/tofu_smol_noclip", "NPO β=0.1 no clip", "MU"),
    "NPO, clip 1.0: R ≤ (nats)": ("results/tofu_smol", "NPO β=0.1", "R ≤ (nats)"),
    "NPO, no clip: R ≤ (nats)": ("results/tofu_smol_noclip", "NPO β=0.1 no clip", "R ≤ (nats)"),
    "NPO, clip 1.0: W ≤": ("results/tofu_smol", "NPO β=0.1", "W ≤"),
    "NPO, no clip: W ≤": ("results/tofu_smol_noclip", "NPO β=0.1 no clip", "W ≤"),
    "NPO, clip 1.0: raw ‖∇‖ median": ("results/tofu_smol", "NPO β=0.1", "‖∇‖ median"),
    "NPO, no clip: ‖∇‖ median": ("results/tofu_smol_noclip", "NPO β=0.1 no clip", "‖∇‖ median"),
}


def test_docs_clipping_ablation_table_matches_the_committed_logs():
    """Every cell of "The clipping ablation on SmolLM2" (epochs 1-8 and 10, and each MU row's
    collapse epoch: the first epoch with MU below half the initial) from claims --weights."""
    start = DOC.index("| forget10, lr 2e-5 | ep 1 |")
    header = [c.strip() for c in DOC[start:].splitlines()[0].strip("|").split("|")]
    epochs = [int(h[3:]) for h in header if h.startswith("ep ")]
    generated = {}
    for folder in {f for f, _, _ in CLIP_ROWS.values()}:
        for r in tofu_claims.weight_rows(tr.load_results(REPO / folder)):
            if r["task"] == "forget10":
                generated[(folder, r["method"], r["quantity"])] = r["values"]
    seen = set()
    for line in DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "").replace("−", "-") for c in line.strip("|").split("|")]
        key = CLIP_ROWS[cells[0]]
        values = generated[key]
        seen.add(cells[0])
        for e, printed in zip(epochs, cells[1:1 + len(epochs)]):
            want = values[e]
            assert abs(float(printed) - want) <= max(0.06 * abs(want), 1e-4), (cells[0], e, printed, want)
        if key[2] == "MU":
            collapse = next(e for e, v in enumerate(values) if e and v < values[0] / 2)
            assert int(cells[-1]) == collapse, (cells[0], collapse)
    assert seen == set(CLIP_ROWS)


def test_readme_figures_command_on_the_committed_smol_results(tmp_path, capsys):
    """README: python -m figures --from-results results/tofu_smol --out ... draws every figure the
    folder holds runs for; Fig. 8 (no forget50/forget90 runs) is the only one skipped, and the LM
    collapse-rate figure is drawn exactly when the folder holds its result file."""
    from figures.__main__ import main as figures_main
    root = REPO / "results" / "tofu_smol"
    assert figures_main(["--from-results", str(root), "--out", str(tmp_path)]) == 0
    status = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
              if line.startswith("fig") and len(line.split()) >= 3}
    has_rate = (root / "llm_collapse_rate.json").exists()
    assert status.pop("fig8_tofu_forget50_90") == "skipped"
    assert status.pop("fig_llm_collapse_rate") == ("ok" if has_rate else "skipped")
    assert set(status.values()) == {"ok"} and len(status) == 7
    assert (tmp_path / "fig14_tofu_stats_forget10.png").stat().st_size > 0


def test_smol_collapse_rate_table_prints_and_names_the_destroyed_ga_run():
    """The committed SmolLM2 collapse-rate result: GA's fit has no tau (None) and its gradient
    vanished at step 96 (uniform output, retain NLL = log V); the table prints both without failing."""
    from llm.studies.collapse_rate_report import dead_step, format_table, read_result
    doc = read_result(REPO / "results" / "tofu_smol")
    ga = next(m for m in doc["methods"] if m["method"] == "ga")
    assert ga["fit"]["log_tau"] is None and dead_step(ga) == 96
    assert all(dead_step(m) is None for m in doc["methods"] if m["method"] == "npo")
    text = format_table(doc)
    assert "GA: the gradient vanished at step 96" in text
    assert [line.split()[2] for line in text.splitlines() if line.startswith("NPO")] == ["logarithmic"] * 3


def test_dead_step_ignores_step_0_and_finds_the_first_zero():
    from llm.studies.collapse_rate_report import dead_step
    assert dead_step({"steps": [0, 1, 2, 3], "grad_norm": [0.0, 1.0, 0.0, 0.0]}) == 2
    assert dead_step({"steps": [0, 1], "grad_norm": [1.0, 1e-30]}) is None


SEED_ROWS = {"GA, clip 1.0": ("GA", ""), "GA, no clip": ("GA", "no_clip"),
             "NPO β 0.1, clip 1.0": ("NPO", ""), "NPO β 0.1, no clip": ("NPO", "no_clip")}


def test_docs_two_seed_clipping_table_matches_the_committed_logs():
    """"The clipping ablation, two seeds": each cell (collapse epoch; MU at epoch 5) per seed from
    results/tofu_smol_clip, where every run of the ablation ran at one commit."""
    runs = tr.load_results(REPO / "results/tofu_smol_clip")
    start = DOC.index("| forget10, lr 2e-5, two seeds |")
    seen = set()
    for line in DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        method, tag = SEED_ROWS[cells[0]]
        seen.add(cells[0])
        for seed, (collapse, mu5) in enumerate(zip(cells[1:3], cells[3:5])):
            (run,) = [r for r in runs if r.method == method and r.seed == seed and r.meta.get("tag", "") == tag]
            mu = [e["summary"][tr.MU] for e in run.evals]
            want = next((e for e, v in enumerate(mu) if e and v < mu[0] / 2), None)
            assert collapse == (str(want) if want is not None else "never"), (cells[0], seed, mu)
            assert abs(float(mu5) - mu[5]) <= 5e-4, (cells[0], seed, mu[5])
    assert seen == set(SEED_ROWS)
