"""The TOFU figure modules read the pipeline's result logs correctly and write non-empty PNG/PDF.

Synthetic logs in the documented layout (llm/pipeline/run.py) with known values: the tests check that
each figure picks the right runs, averages seeds before choosing the best epoch, and saves files.
"""
from __future__ import annotations

import json
import math

import pytest

from conftest import labelled_lines
from figures import (fig2_tofu_ga_vs_npo as fig2, fig5_tofu_tradeoff as fig5, fig6_tofu_dynamics as fig6,
                     fig8_tofu_forget50_90 as fig8, fig10_tofu_forget_kl as fig10,
                     fig11_tofu_rt_ablation as fig11, fig12_tofu_full_statistics as fig12)
from llm.studies import tofu_claims
from llm.studies import tofu_results as tr

EPOCHS = 5
COMPONENTS = [k for s in tr.SET_KEYS for k in s[1:]]


def fq_value(method, seed, epoch):
    """Known FQ curves: GA peaks at epoch 1 then collapses; NPO's seed mean peaks at epoch 4 although
    seed 0 alone peaks at epoch 3 and seed 1 at epoch 5 (so the seed mean must be taken first)."""
    if epoch == 0:
        return 1e-6
    if method.startswith("GA"):
        return 1e-3 if epoch == 1 else 1e-3 * 10.0 ** (-20 * (epoch - 1))
    table = {0: [0.0, 0.01, 0.1, 0.5, 0.3, 0.05], 1: [0.0, 0.01, 0.05, 0.1, 0.4, 0.45]}
    return table[seed][epoch]


def mu_value(method, rt_weight, epoch):
    if method.startswith("GA"):
        return max(0.0, 0.6 - 0.2 * epoch)
    return 0.6 - 0.02 * epoch + 0.01 * rt_weight * epoch


def eval_row(method, seed, epoch, steps_per_epoch, rt_weight):
    summary = {k: 0.5 for k in COMPONENTS}
    summary.update({tr.FQ: fq_value(method, seed, epoch), tr.MU: mu_value(method, rt_weight, epoch),
                    tr.FORGET_TR: 0.6, "forget_Q_A_ROUGE": 0.9 - 0.1 * epoch})
    kl_scale = 3.0 if method.startswith("GA") else 1.0
    return {"event": "eval", "step": epoch * steps_per_epoch, "epoch": float(epoch), "summary": summary,
            "kl": {tr.KL_FORGET: kl_scale * epoch, tr.KL_REAL_WORLD: 0.1 * kl_scale * epoch},
            "samples": [{"set": "forget", "question": "Who wrote X?", "answer": "Y wrote X.",
                         "generated": f"{method} answer at epoch {epoch}"}]}


def write_results(root, runs):
    """runs: (task, method, seed, rt_weight, tag) tuples; returns root."""
    entries = []
    for task, method, seed, rt_weight, tag in runs:
        run_id = f"{task}-{method.replace('+', '_').lower()}-rt{rt_weight:g}-s{seed}"
        spe = {"forget01": 1, "forget05": 6}.get(task, 12)
        meta = {"event": "meta", "id": run_id, "task": task, "method": method, "seed": seed,
                "knobs": {"rt_weight": rt_weight, "beta": 0.1}, "tag": tag, "steps_per_epoch": spe}
        rows = [meta] + [eval_row(method, seed, e, spe, rt_weight) for e in range(EPOCHS + 1)]
        log = root / "runs" / f"{run_id}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        entries.append({"id": run_id, "log": f"runs/{run_id}.jsonl"})
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "preset": "synthetic",
                                                    "device": "test", "runs": entries}))
    return root


def rt_default(method):
    return 1.0 if method.endswith("+RT") else 0.0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tofu_results")
    runs = [(task, m, seed, rt_default(m), "")
            for task in ("forget01", "forget05", "forget10") for m in ("GA", "GA+RT", "NPO", "NPO+RT")
            for seed in (0, 1)]
    runs += [("forget10", "NPO+RT", 0, w, "rt_weight") for w in (2.0, 5.0)]
    runs += [("forget50", "NPO+RT", 0, 1.0, ""), ("forget50", "NPO+RT", 0, 5.0, "rt_weight"),
             ("forget90", "NPO+RT", 0, 12.0, "rt_weight")]
    return write_results(root, runs)


def test_best_epoch_averages_seeds_first(results):
    data = fig5.compute(tr.load_results(results))
    npo = data["points"]["forget05"]["NPO"]
    assert npo["epoch"] == 4 and npo["n_seeds"] == 2
    assert npo["forget_quality"] == pytest.approx((0.3 + 0.4) / 2)
    assert npo["model_utility"] == pytest.approx(mu_value("NPO", 0.0, 4))
    ga = data["points"]["forget10"]["GA"]
    assert ga["epoch"] == 1 and ga["forget_quality"] == pytest.approx(1e-3)


def test_main_grid_excludes_ablation_runs(results):
    runs = tr.load_results(results)
    groups = tr.main_runs(runs, "forget10")
    assert list(groups) == ["GA", "GA+RT", "NPO", "NPO+RT"]
    assert {r.rt_weight for r in groups["NPO+RT"]} == {1.0}
    data = fig11.compute(runs)
    assert data["weights"] == [0.0, 1.0, 2.0, 5.0]
    last = [data["final"][w]["model_utility"] for w in data["weights"]]
    assert last == pytest.approx([mu_value("NPO", w, EPOCHS) for w in data["weights"]])


def test_fig8_picks_large_rt_weights(results):
    lines = fig8.compute(tr.load_results(results))["lines"]
    assert {k: v["main"] for k, v in lines.items()} == {"forget50 RT=5": True, "forget50 RT=1": False,
                                                        "forget90 RT=12": True}
    assert lines["forget90 RT=12"][tr.MU]["mean"][-1] == pytest.approx(mu_value("NPO+RT", 12.0, EPOCHS))


def test_curves_follow_steps_and_kl(results):
    runs = tr.load_results(results)
    c6 = fig6.compute(runs)["curves"]
    assert c6["forget01"]["GA"][tr.FQ]["steps"] == list(range(EPOCHS + 1))
    assert c6["forget10"]["GA"][tr.FQ]["steps"] == [12 * e for e in range(EPOCHS + 1)]
    kl = fig10.compute(runs)["curves"]
    assert kl["GA"]["mean"][-1] == pytest.approx(3 * kl["NPO"]["mean"][-1])
    f2 = fig2.compute(runs)
    assert set(f2["curves"]) == {"GA", "NPO", "GA+RT", "NPO+RT"}
    assert f2["curves"]["GA"][f"kl:{tr.KL_REAL_WORLD}"]["mean"][2] == pytest.approx(0.6)
    assert f2["samples"]["NPO+RT"]["generated"] == f"NPO+RT answer at epoch {EPOCHS}"


def test_full_statistics_table(results):
    data = fig12.compute(tr.load_results(results))
    assert set(data["curves"]) == {"forget01", "forget05", "forget10", "forget50"}
    assert list(data["curves"]["forget50"]) == ["NPO+RT", "NPO+RT RT=5"]
    assert "forget20" in data["skipped"] and "forget90" in data["table"]
    row = data["table"]["forget05"]["NPO"]["best"]
    assert row["epoch"] == 4 and row[tr.FQ] == pytest.approx(0.35)
    assert row["forget_Q_A_ROUGE"] == pytest.approx(0.5)
    md = fig12.markdown_table({**data, "source": "x"})
    assert "| forget05 | NPO | best 4 |" in md


# ---- the data each figure draws, against the known values the logs were written from -----------

def seed_mean(fn, method, epochs, seeds=(0, 1)):
    return [sum(fn(method, s, e) for s in seeds) / len(seeds) for e in epochs]


def best_epoch(method):
    fq = seed_mean(fq_value, method, range(EPOCHS + 1))
    return max(range(EPOCHS + 1), key=fq.__getitem__)


def _check_fig5(fig):
    assert [ax.get_title() for ax in fig.axes] == ["forget01", "forget05", "forget10"]
    for ax in fig.axes:
        points = labelled_lines(ax)
        assert list(points) == ["GA", "GA+RT", "NPO", "NPO+RT"]
        for method, line in points.items():  # one point: (MU, FQ) at the seed-mean best epoch
            e = best_epoch(method)
            assert list(line.get_xdata()) == pytest.approx([mu_value(method, rt_default(method), e)])
            fq = seed_mean(fq_value, method, [e])[0]
            assert list(line.get_ydata()) == pytest.approx([max(fq, fig5.FLOOR)])


def _check_fig6(fig):
    epochs = list(range(EPOCHS + 1))
    fq_axes, mu_axes = fig.axes[:3], fig.axes[3:6]
    for task, fq_ax, mu_ax in zip(("forget01", "forget05", "forget10"), fq_axes, mu_axes):
        x = [e * {"forget01": 1, "forget05": 6}.get(task, 12) for e in epochs] if task == "forget01" \
            else epochs
        for method in ("GA", "GA+RT", "NPO", "NPO+RT"):
            fq, mu = labelled_lines(fq_ax)[method], labelled_lines(mu_ax)[method]
            assert list(fq.get_xdata()) == x and list(mu.get_xdata()) == x
            assert list(fq.get_ydata()) == pytest.approx(seed_mean(fq_value, method, epochs))
            assert list(mu.get_ydata()) == pytest.approx(
                [mu_value(method, rt_default(method), e) for e in epochs])


def _check_fig10(fig):
    lines = labelled_lines(fig.axes[0])
    assert list(lines) == ["GA", "GA+RT", "NPO", "NPO+RT"]
    for method, line in lines.items():  # forget KL from epoch 1 on (0 at step 0 on a log axis)
        scale = 3.0 if method.startswith("GA") else 1.0
        assert list(line.get_xdata()) == list(range(1, EPOCHS + 1))
        assert list(line.get_ydata()) == pytest.approx([scale * e for e in range(1, EPOCHS + 1)])


def _check_fig11(fig):
    epochs = list(range(EPOCHS + 1))
    weights = [0.0, 1.0, 2.0, 5.0]
    seeds = {0.0: (0, 1), 1.0: (0, 1), 2.0: (0,), 5.0: (0,)}  # the ablation runs have one seed
    fq_lines, mu_lines = labelled_lines(fig.axes[0]), labelled_lines(fig.axes[1])
    for w in weights:
        method = "NPO" if w == 0 else "NPO+RT"
        fq = fq_lines[f"RT weight {w:g}"]
        assert list(fq.get_ydata()) == pytest.approx(seed_mean(fq_value, method, epochs, seeds[w]))
        assert list(mu_lines[f"RT weight {w:g}"].get_ydata()) == pytest.approx(
            [mu_value(method, w, e) for e in epochs])
    final_fq = labelled_lines(fig.axes[2])["Forget Quality"]
    final_mu = labelled_lines(fig.axes[3])["Model Utility"]  # the twin axis
    assert list(final_fq.get_xdata()) == weights == list(final_mu.get_xdata())
    assert list(final_fq.get_ydata()) == pytest.approx(
        [seed_mean(fq_value, "NPO", [EPOCHS], seeds[w])[0] for w in weights])
    assert list(final_mu.get_ydata()) == pytest.approx([mu_value("NPO", w, EPOCHS) for w in weights])


def _check_fig2(fig):
    epochs = list(range(EPOCHS + 1))
    fq_ax, mu_ax, kl_ax, text_ax = fig.axes
    for method in ("GA", "NPO", "GA+RT", "NPO+RT"):
        scale = 3.0 if method.startswith("GA") else 1.0
        fq, mu, kl = (labelled_lines(ax)[method] for ax in (fq_ax, mu_ax, kl_ax))
        assert list(fq.get_xdata()) == epochs == list(mu.get_xdata())
        assert list(fq.get_ydata()) == pytest.approx(seed_mean(fq_value, method, epochs))
        assert list(mu.get_ydata()) == pytest.approx([mu_value(method, rt_default(method), e) for e in epochs])
        assert list(kl.get_xdata()) == epochs[1:]  # KL is 0 at step 0: not drawn on the log axis
        assert list(kl.get_ydata()) == pytest.approx([0.1 * scale * e for e in epochs[1:]])
    text = text_ax.texts[0].get_text()  # the +RT runs' answers at the last epoch
    assert f"GA+RT: GA+RT answer at epoch {EPOCHS}" in text and f"NPO+RT: NPO+RT answer at epoch {EPOCHS}" in text


def _check_fig8(fig):
    epochs = list(range(EPOCHS + 1))
    fq_lines, mu_lines = labelled_lines(fig.axes[0]), labelled_lines(fig.axes[1])
    expected = {"forget50 RT=5": 5.0, "forget50 RT=1": 1.0, "forget90 RT=12": 12.0}
    assert list(fq_lines) == list(mu_lines) == list(expected)
    for name, w in expected.items():  # one seed each
        assert list(fq_lines[name].get_ydata()) == pytest.approx(seed_mean(fq_value, "NPO+RT", epochs, (0,)))
        assert list(mu_lines[name].get_ydata()) == pytest.approx([mu_value("NPO+RT", w, e) for e in epochs])


DRAWN = {fig2: _check_fig2, fig5: _check_fig5, fig6: _check_fig6, fig8: _check_fig8, fig10: _check_fig10,
         fig11: _check_fig11}


@pytest.mark.parametrize("module", [fig2, fig5, fig6, fig8, fig10, fig11,
                                    pytest.param(fig12, marks=pytest.mark.slow)])
def test_main_draws_the_logged_values_and_writes_png_and_pdf(module, results, tmp_path, capsys, drawn):
    assert module.main(["--quick", "--from-results", str(results), "--out", str(tmp_path)]) == 0
    pngs, pdfs = list(tmp_path.glob("*.png")), list(tmp_path.glob("*.pdf"))
    assert pngs and len(pngs) == len(pdfs) == len(drawn)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert all(p.read_bytes()[:4] == b"%PDF" for p in pdfs)
    assert "wrote" in capsys.readouterr().out
    if module in DRAWN:
        DRAWN[module](drawn[0])


def test_json_output_is_one_document(results, tmp_path, capsys):
    assert fig5.main(["--json", "--from-results", str(results), "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert math.isclose(doc["points"]["forget05"]["NPO"]["forget_quality"], 0.35)


def test_missing_results_one_line_error(tmp_path, capsys):
    assert fig6.main(["--from-results", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m llm pipeline" in err
    assert not list(tmp_path.glob("*.png"))


def test_missing_task_names_flag(tmp_path, capsys):
    root = write_results(tmp_path / "r", [("forget05", "NPO", 0, 0.0, "")])
    assert fig8.main(["--from-results", str(root), "--out", str(tmp_path)]) == 2
    assert "--tasks forget50" in capsys.readouterr().err


def test_skip_missing_is_a_skip_not_an_error(tmp_path, capsys):
    """--skip-missing turns 'this folder has no runs for me' into exit 3 and one stdout line."""
    from figures.cli import EXIT_SKIPPED
    root = write_results(tmp_path / "r", [("forget05", "NPO", 0, 0.0, "")])
    assert fig8.main(["--from-results", str(root), "--out", str(tmp_path), "--skip-missing"]) == EXIT_SKIPPED
    out = capsys.readouterr()
    assert out.out.startswith("skipped: no forget50/forget90") and not out.err
    assert not list(tmp_path.glob("*.png"))


def test_skip_missing_does_not_hide_a_broken_folder(tmp_path, capsys):
    """A folder that is not a result folder at all is still an error under --skip-missing."""
    assert fig6.main(["--from-results", str(tmp_path / "nope"), "--out", str(tmp_path),
                      "--skip-missing"]) == 2
    assert "python -m llm pipeline" in capsys.readouterr().err


def test_figures_from_results_draws_what_the_folder_holds(tmp_path, capsys):
    """python -m figures --from-results: every result-reading figure, Fig. 8 and the LM collapse-rate
    figure skipped (no forget50/90 runs, no llm_collapse_rate.json), exit 0, files in --out only."""
    from figures.__main__ import main as figures_main
    runs = [(task, m, 0, rt_default(m), "") for task in ("forget05", "forget10")
            for m in ("GA", "GA+RT", "NPO", "NPO+RT")]
    root = write_results(tmp_path / "r", runs)
    out = tmp_path / "out"
    assert figures_main(["--from-results", str(root), "--out", str(out)]) == 0
    status = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
              if line.startswith("fig")}
    assert status == {"fig_llm_collapse_rate": "skipped", "fig2_tofu_ga_vs_npo": "ok",
                      "fig5_tofu_tradeoff": "ok", "fig6_tofu_dynamics": "ok", "fig7_tofu_samples": "ok",
                      "fig8_tofu_forget50_90": "skipped", "fig10_tofu_forget_kl": "ok",
                      "fig11_tofu_rt_ablation": "ok", "fig12_tofu_full_statistics": "ok"}
    assert {p.name for p in out.glob("*.png")} >= {"fig2_tofu_ga_vs_npo.png", "fig6_tofu_dynamics.png",
                                                   "fig14_tofu_stats_forget10.png"}
    assert not (out / "fig8_tofu_forget50_90.png").exists()


def test_figures_from_results_fails_when_a_figure_fails(tmp_path, capsys):
    """A malformed log is a failure of the whole command, not a skip."""
    from figures.__main__ import main as figures_main
    root = write_results(tmp_path / "r", [("forget05", "NPO", 0, 0.0, "")])
    (root / "runs" / "forget05-npo-rt0-s0.jsonl").write_text("{not json\n")
    assert figures_main(["--from-results", str(root), "--out", str(tmp_path / "out")]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_claims_table_reads_the_right_runs(results, capsys):
    rows = tofu_claims.claims(tr.load_results(results))
    collapse = [r for r in rows if "collapse" in r["claim"]]
    assert [r["claim"][:8] for r in collapse] == ["forget05", "forget10"] and all(r["holds"] for r in collapse)
    # synthetic GA: MU 0.6 - 0.2 e, below half (0.3) from epoch 2; NPO never
    assert "GA 2, GA+RT 2, NPO never" in collapse[0]["measured"]
    fq = next(r for r in rows if "higher FQ" in r["claim"])
    # two seeds: FQ 0.3 and 0.4 at epoch 4, sample std 0.0707; MU equal across seeds
    assert fq["holds"] and "NPO+RT 0.35 ± 0.071 (MU 0.56 ± 0, epoch 4)" in fq["measured"]
    assert fq["measured"].endswith("[2 seeds, mean ± std]")
    rt = next(r for r in rows if "larger RT weight" in r["claim"])
    assert rt["holds"] and "MU 0.55 (RT 1) vs 0.75 (RT 5)" in rt["measured"]
    large = next(r for r in rows if "Fig. 8" in r["claim"])
    assert not large["holds"]            # synthetic last-epoch FQ is exactly 0.05, not > 0.05
    assert tofu_claims.main(["--from-results", str(results)]) == 0
    assert "| forget10: NPO+RT reaches" in capsys.readouterr().out


# ---- seed spread: bands are mean +- std of the logs ---------------------------------------------

def _capture(module, monkeypatch):
    """Replace ``module.save`` so the drawn figure stays open for inspection."""
    drawn = []

    def keep(fig, out_dir, stem):
        drawn.append(fig)
        return [out_dir / f"{stem}.png"]
    monkeypatch.setattr(module, "save", keep)
    return drawn


def _logged(root, task, method, key):
    """{seed: [value per epoch]} read straight from the JSONL logs."""
    out = {}
    for path in sorted((root / "runs").glob(f"{task}-{method.replace('+', '_').lower()}-rt*-s*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        meta = rows[0]
        if meta.get("tag"):
            continue
        out[meta["seed"]] = [r["summary"][key] for r in rows if r["event"] == "eval"]
    return out


def test_two_seed_band_is_mean_plus_minus_std_of_the_logs(results, tmp_path, monkeypatch):
    import numpy as np
    drawn = _capture(fig6, monkeypatch)
    fig6.plot({**fig6.compute(tr.load_results(results)), "source": "test"}, tmp_path)
    ax = next(a for a in drawn[0].axes if a.get_title() == "forget05")    # the FQ row
    logged = np.array(list(_logged(results, "forget05", "NPO", tr.FQ).values()))
    assert logged.shape == (2, EPOCHS + 1)
    mean, std = logged.mean(0), logged.std(0, ddof=1)
    assert std.max() > 0.01                                              # the seeds do differ
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "NPO")
    assert np.allclose(line.get_ydata(), mean)
    expected = {(float(x), round(float(y), 12)) for x, m, s in zip(range(EPOCHS + 1), mean, std)
                for y in (m - s, m + s)}
    bands = [{(float(x), round(float(y), 12)) for x, y in c.get_paths()[0].vertices}
             for c in ax.collections]
    assert any(expected <= b for b in bands)
    colour = matplotlib_colour(line.get_color())
    match = [c for c, b in zip(ax.collections, bands) if expected <= b]
    assert tuple(match[0].get_facecolor()[0][:3]) == pytest.approx(colour)


def matplotlib_colour(c):
    from matplotlib.colors import to_rgb
    return to_rgb(c)


def test_one_seed_draws_no_band(results, tmp_path, monkeypatch):
    drawn = _capture(fig8, monkeypatch)
    fig8.plot({**fig8.compute(tr.load_results(results)), "source": "test"}, tmp_path)
    assert all(not ax.collections for ax in drawn[0].axes)


def test_best_point_reports_seed_std(results):
    p = tr.best_point(tr.main_runs(tr.load_results(results), "forget05")["NPO"])
    assert p["forget_quality_std"] == pytest.approx(0.1 / 2 ** 0.5)     # seeds 0.3, 0.4
    assert p["model_utility_std"] == 0.0


def test_claims_rows_for_forget20_30(tmp_path):
    runs = [(t, m, s, rt_default(m), "") for t, methods in
            (("forget20", ("GA", "GA+RT", "NPO", "NPO+RT")), ("forget30", ("GA", "GA+RT", "NPO+RT")))
            for m in methods for s in (0, 1)]
    rows = {r["claim"][:8]: r for r in tofu_claims.claims(tr.load_results(write_results(tmp_path, runs)))
            if "App. E.2" in r["claim"]}
    assert set(rows) == {"forget20", "forget30"}
    # NPO's synthetic FQ curve is NPO+RT's, so on forget20 NPO also passes 0.05: the claim fails
    assert not rows["forget20"]["holds"] and "above 0.05: NPO, NPO+RT" in rows["forget20"]["measured"]
    assert rows["forget30"]["holds"] and "above 0.05: NPO+RT" in rows["forget30"]["measured"]
    m = rows["forget30"]["measured"]
    assert "GA 0.001 ± 0 (MU 0.4 ± 0, epoch 1)" in m and "NPO+RT 0.35 ± 0.071 (MU" in m
    assert m.endswith("[2 seeds, mean ± std]")


# ---- Fig. 7: sample answers -----------------------------------------------------------------------

FIG7_METHODS = ["GA+RT", "IDK+RT", "DPO+RT", "NPO+RT"]


def _sample_rows(method, seed, epoch):
    """Two questions per set; the answer names method, seed and epoch, with characters that
    matplotlib ($: mathtext) and Markdown (|) would otherwise interpret, and one long word."""
    rows = []
    for st in ("forget", "retain", "real_world"):
        for i in range(2):
            gen = (f"{method} s{seed} e{epoch} {st}{i}: costs $5 | {'x' * 70} and a long tail of words "
                   f"to wrap " * (1 + i))
            rows.append({"set": st, "question": f"{st} question {i}?", "answer": f"{st} truth {i}",
                         "generated": gen if not (method == "DPO+RT" and st == "real_world") else ""})
    return rows


@pytest.fixture(scope="module")
def fig7_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig7")
    write_results(root, [("forget10", m, s, rt_default(m), "") for m in FIG7_METHODS + ["GA"]
                         for s in (0, 1)])
    for path in (root / "runs").glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for r in rows[1:]:
            r["samples"] = _sample_rows(rows[0]["method"], rows[0]["seed"], int(r["epoch"]))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_fig7_cells_are_the_logged_samples_at_the_chosen_epoch(fig7_results, tmp_path, monkeypatch):
    from figures import fig7_tofu_samples as fig7
    runs = tr.load_results(fig7_results)
    data = fig7.compute(runs)
    assert list(data["methods"]) == FIG7_METHODS
    # GA+RT: MU falls below half the initial 0.6 after epoch 1; the +RT NPO-like methods peak at 4
    assert {m: c["epoch"] for m, c in data["methods"].items()} == {
        "GA+RT": 1, "IDK+RT": 4, "DPO+RT": 4, "NPO+RT": 4}
    drawn = _capture(fig7, monkeypatch)
    paths = fig7.plot({**data, "source": "test"}, tmp_path)
    fig = drawn[0]
    texts = {t.get_gid(): t for ax in fig.axes for t in ax.texts}
    md = (tmp_path / "fig7_tofu_samples.md").read_text()
    assert paths[-1].name == "fig7_tofu_samples.md"
    squash = lambda s: "".join(s.split())      # wrapping only moves whitespace
    n_cells = 0
    for m, chosen in data["methods"].items():
        run = next(r for r in runs if r.method == m and r.seed == 0)
        logged = tr.samples(run, chosen["step"])
        assert logged == _sample_rows(m, 0, int(chosen["epoch"]))
        for i, q in enumerate(fig7.shown(data)):
            s = next(x for x in logged if x["set"] == q["set"] and x["question"] == q["question"])
            expect = s["generated"] or fig7.EMPTY
            assert squash(texts[f"cell:{i}:{m}"].get_text()) == squash(expect)
            assert squash(texts[f"question:{i}"].get_text()).endswith(squash(s["question"]))
            n_cells += 1
        for s in logged:     # the Markdown holds every stored sample, escaped
            cell = " ".join((s["generated"] or fig7.EMPTY).split()).replace("|", "\\|")
            assert f" {cell} |" in md
    assert n_cells == 4 * 3
    assert {q["set"] for q in fig7.shown(data)} == {"forget", "retain", "real_world"}
    # legible: fixed font size, math text off, every line inside the figure
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for t in texts.values():
        assert t.get_fontsize() >= 7 and not t.get_parse_math()
        ext = t.get_window_extent(renderer)
        assert box.x0 - 1 <= ext.x0 and ext.x1 <= box.x1 + 1 and box.y0 - 1 <= ext.y0 and ext.y1 <= box.y1 + 1


def test_fig7_main_writes_png_pdf_md(fig7_results, tmp_path, capsys):
    from figures import fig7_tofu_samples as fig7
    assert fig7.main(["--from-results", str(fig7_results), "--out", str(tmp_path)]) == 0
    assert {p.suffix for p in tmp_path.iterdir()} == {".png", ".pdf", ".md"}
    assert all(p.stat().st_size > 1000 for p in tmp_path.iterdir())


def test_fig7_names_the_flag_when_methods_are_missing(results, tmp_path, capsys):
    from figures import fig7_tofu_samples as fig7
    root = write_results(tmp_path / "r", [("forget05", "NPO", 0, 0.0, "")])
    assert fig7.main(["--from-results", str(root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tasks forget10" in err
    assert not (tmp_path / "o").exists()
