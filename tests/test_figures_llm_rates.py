"""The LLM collapse-rate and lr-sweep figures draw the committed results' numbers, run under
``python -m figures``, and refuse a missing or malformed result file in one line (exit 2)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import labelled_lines
from figures import fig_llm_collapse_rate as fig_rate
from figures import fig_tofu_lr_sweep as fig_sweep
from figures.__main__ import figure_modules

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "tofu_cpu"


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    """One simulations cache for the module: panel (c)'s logistic runs are computed once."""
    return tmp_path_factory.mktemp("sim_cache")


def _rate_doc() -> dict:
    return json.loads((COMMITTED / "llm_collapse_rate.json").read_text())


def test_both_figures_are_run_by_python_m_figures():
    assert {"fig_llm_collapse_rate", "fig_tofu_lr_sweep"} <= set(figure_modules())


def test_collapse_rate_figure_draws_the_committed_result(sim_cache, tmp_path, capsys, drawn):
    from simulations import theorem2

    argv = ["--from-results", str(COMMITTED), "--results", str(sim_cache), "--out", str(tmp_path)]
    assert fig_rate.main(["--quick", *argv]) == 0   # the flags python -m figures passes
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm_collapse_rate.pdf", "llm_collapse_rate.png"]
    div_ax, par_ax, log_ax = drawn[0].axes
    doc = _rate_doc()
    div, par = labelled_lines(div_ax), labelled_lines(par_ax)
    assert len(div) == len(par) == len(doc["methods"]) == 4
    for m in doc["methods"]:
        t = np.asarray(m["steps"], float)
        keep = t > 0                                   # log-x axes: step 0 is left out
        line = next(v for k, v in div.items() if k.startswith(m["label"] + ":"))
        assert np.array_equal(line.get_xdata(), t[keep])
        assert np.array_equal(line.get_ydata(), np.abs(m["forget_logratio"])[keep])
        assert f"{m['fit']['law'][:3]} (R2 lin {m['fit']['linear_r2']:.2f}" in line.get_label()
        assert np.array_equal(par[m["label"]].get_xdata(), t[keep])
        assert np.array_equal(par[m["label"]].get_ydata(), np.asarray(m["param_distance"])[keep])
    # panel (c): Theorem 2's logistic model at the LM run's betas, GA first, 1e4 steps, one seed
    betas = tuple(m["beta"] for m in doc["methods"] if m["method"] == "npo")
    traj = theorem2.simulate(theorem2.Config(beta=betas, steps=10_000, seeds=1, per_decade=20),
                             "logistic", sim_cache)
    logistic = labelled_lines(log_ax)
    assert list(logistic) == ["GA", "NPO beta=0.1", "NPO beta=0.5", "NPO beta=1"]
    for j, line in enumerate(logistic.values()):
        assert np.array_equal(line.get_xdata(), traj.steps[1:])
        assert np.allclose(line.get_ydata(), traj.norm[0, j, 1:], rtol=1e-12, atol=0)


def test_collapse_rate_figure_json_is_the_result_as_read(sim_cache, tmp_path, capsys):
    assert fig_rate.main(["--json", "--from-results", str(COMMITTED / "llm_collapse_rate.json"),
                          "--results", str(sim_cache), "--out", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["llm"] == _rate_doc()
    assert shown["logistic"]["labels"][0] == "GA" and len(shown["logistic"]["norm"]) == 4


def _drop(key):
    def edit(doc):
        del doc["methods"][1]["fit"][key]
    return edit


@pytest.mark.parametrize("edit, raw, message", [
    (None, None, "not found"),                                                   # no file at all
    (None, '{"methods": [', "malformed JSON"),
    (lambda d: d["config"].pop("lr"), None, "config has no 'lr'"),
    (lambda d: d["methods"][2]["param_distance"].pop(), None, "of one length"),
    (lambda d: d["methods"][0].update(method="dpo"), None, "valid 'method'"),
    (lambda d: d["methods"][3].update(beta=None), None, "beta > 0"),
    (_drop("log_r2"), None, "'fit'"),
    (lambda d: d.update(methods=[]), None, "'methods' list"),
])
def test_collapse_rate_figure_refuses_a_bad_result_in_one_line(tmp_path, capsys, edit, raw, message):
    folder = tmp_path / "res"
    folder.mkdir()
    if edit is not None or raw is not None:
        doc = copy.deepcopy(_rate_doc())
        if edit is not None:
            edit(doc)
        (folder / "llm_collapse_rate.json").write_text(raw if raw is not None else json.dumps(doc))
    out = tmp_path / "out"
    code = fig_rate.main(["--from-results", str(folder), "--results", str(tmp_path / "sim"),
                          "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("python -m figures.fig_llm_collapse_rate: error: ")
    assert not out.exists() and not (tmp_path / "sim").exists()   # nothing drawn, nothing computed


def _sweep_lines(fig) -> dict:
    """{(task, clip title, label): Line2D} over the sweep figure's panels."""
    out = {}
    for ax in fig.axes:
        task, clip = ax.get_title().split(", ")
        out.update({(task, clip, label): line for label, line in labelled_lines(ax).items()})
    return out


def expected_sweep_lines(rows) -> dict:
    """What each panel must draw: lr (sorted) against the collapse epoch, 'never' drawn at NEVER."""
    groups: dict = {}
    for r in rows:
        clip = f"clipping at {r['max_grad_norm']:g}" if r["max_grad_norm"] else "clipping off"
        label = "GA" if r["method"] == "GA" else f"NPO beta={r['beta']:g}"
        groups.setdefault((r["task"], clip, label), []).append(r)
    return {key: ([r["lr"] for r in sorted(g, key=lambda r: r["lr"])],
                  [fig_sweep.NEVER if r["collapse_epoch"] is None else r["collapse_epoch"]
                   for r in sorted(g, key=lambda r: r["lr"])])
            for key, g in groups.items()}


def test_lr_sweep_figure_draws_the_committed_sweep(tmp_path, capsys, drawn):
    path = COMMITTED / "lr_sweep.json"
    assert fig_sweep.main(["--quick", "--force", "--sweep", str(path), "--out", str(tmp_path),
                           "--table"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(path.read_text())["rows"]
    assert fig_sweep.table({"rows": rows}) in out and out.rstrip().splitlines()[-1].startswith("wrote ")
    lines, want = _sweep_lines(drawn[0]), expected_sweep_lines(rows)
    assert set(lines) == set(want) and len(want) == 12          # 2 tasks x 2 clips x (GA + 2 betas)
    for key, (lrs, epochs) in want.items():
        assert list(lines[key].get_xdata()) == lrs and list(lines[key].get_ydata()) == epochs
    assert any(fig_sweep.NEVER in e for _, e in want.values())  # the "never" row is exercised


def test_lr_sweep_figure_without_table_prints_only_what_it_wrote(tmp_path, capsys):
    assert fig_sweep.main(["--sweep", str(COMMITTED / "lr_sweep.json"), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("wrote ")


@pytest.mark.parametrize("raw, message", [(None, "not found"), ('{"rows": 1}', "'rows' list")])
def test_lr_sweep_figure_refuses_a_bad_file_in_one_line(tmp_path, capsys, raw, message):
    path = tmp_path / "lr_sweep.json"
    if raw is not None:
        path.write_text(raw)
    assert fig_sweep.main(["--sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("python -m figures.fig_tofu_lr_sweep: error: ")
    assert not (tmp_path / "out").exists()
