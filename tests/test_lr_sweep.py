"""The lr sweep: its file's reader (accepts a well-formed file, rejects a malformed one in one line),
its one-line CLI errors, and (slow) a one-row sweep end to end on the micro pipeline: inputs read
through the pipeline's manifest, the row equal to the pipeline's own run of the same settings, rows
cached as stages keyed by their code."""
from __future__ import annotations

import json

import pytest

from llm.studies.lr_sweep import SweepError, collapse_epoch, grid, read_sweep

ROW = {"task": "forget10", "method": "NPO", "beta": 0.1, "lr": 3e-4, "max_grad_norm": 1.0,
       "collapse_epoch": 3, "final_mu": 0.0, "best_fq": 0.08}


def _write(tmp_path, doc, raw=None):
    path = tmp_path / "lr_sweep.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path


def test_reader_accepts_rows_with_never_and_null_fq(tmp_path):
    rows = [ROW, {**ROW, "method": "GA", "beta": None, "collapse_epoch": None, "best_fq": None, "lr": 1}]
    assert read_sweep(_write(tmp_path, {"rows": rows}))["rows"][1]["collapse_epoch"] is None


@pytest.mark.parametrize("doc, raw, message", [
    (None, '{"rows": [', "malformed JSON"),
    ([ROW], None, "'rows' list"),
    ({"rows": [{k: v for k, v in ROW.items() if k != "collapse_epoch"}]}, None, "'collapse_epoch'"),
    ({"rows": [{**ROW, "lr": "fast"}]}, None, "'lr'"),
    ({"rows": [{**ROW, "method": "DPO"}]}, None, "unknown method"),
])
def test_reader_rejects_a_malformed_file_in_one_line(tmp_path, doc, raw, message):
    with pytest.raises(SweepError) as err:
        read_sweep(_write(tmp_path, doc, raw))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_figure_cli_reports_a_malformed_file_and_writes_nothing(tmp_path, capsys):
    from figures.fig_tofu_lr_sweep import main
    path = _write(tmp_path, {"rows": [{**ROW, "final_mu": None}]})
    assert main(["--sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "final_mu" in err
    assert not (tmp_path / "out").exists()


def test_figure_draws_a_wellformed_sweep(tmp_path, drawn):
    from conftest import labelled_lines
    from figures.fig_tofu_lr_sweep import NEVER, main
    rows = [{**ROW, "lr": lr, "collapse_epoch": c} for lr, c in ((1e-3, 2), (1e-4, None), (3e-4, 5))]
    rows += [{**r, "method": "GA", "beta": None, "collapse_epoch": 1} for r in rows]
    assert main(["--sweep", str(_write(tmp_path, {"rows": rows})), "--out", str(tmp_path)]) == 0
    (ax,) = drawn[0].axes                     # one task, one clip: one panel
    assert ax.get_title() == "forget10, clipping at 1"
    lines = labelled_lines(ax)
    assert list(lines["NPO beta=0.1"].get_xdata()) == [1e-4, 3e-4, 1e-3]      # sorted by lr
    assert list(lines["NPO beta=0.1"].get_ydata()) == [NEVER, 5, 2]           # never drawn at NEVER
    assert list(lines["GA"].get_ydata()) == [1, 1, 1]


def test_collapse_epoch_is_the_first_epoch_below_half():
    assert collapse_epoch([0, 1, 2, 3], [0.8, 0.7, 0.39, 0.0]) == 2
    assert collapse_epoch([0, 1, 2], [0.8, 0.5, 0.41]) is None
    assert collapse_epoch([], []) is None


def test_grid_puts_the_calibration_runs_first():
    specs = grid(lrs=(1e-4, 3e-4), betas=(0.1, 1.0))
    assert [(s.task, s.method, s.max_grad_norm) for s in specs[:2]] == [("forget10", "GA", 1.0)] * 2
    assert len(specs) == 2 * 3 * 2 * 2 and len({s.key() for s in specs}) == len(specs)


@pytest.mark.parametrize("args, message", [
    (["--lrs", "0"], "--lrs and --betas must be finite and > 0"),
    (["--methods", "DPO"], "--methods GA and/or NPO"),
    (["--bogus"], "unrecognized arguments"),
    (["--pipeline", "MISSING"], "manifest.json not found"),
    (["--clips", "nan"], "argument --clips: 'nan' is not a finite number"),
    (["--out", "DIR"], "is a folder"),
])
def test_sweep_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    from llm.__main__ import main
    args = [str(tmp_path / "missing") if a == "MISSING" else str(tmp_path) if a == "DIR" else a
            for a in args]
    try:
        code = main(["lr-sweep", "--out", str(tmp_path / "sweep.json"), *args])
    except SystemExit as exc:  # a usage error leaves from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("python -m llm lr-sweep: error: ")
    assert not (tmp_path / "sweep.json").exists()


# ---- one row end to end ---------------------------------------------------------------------------

def _sweep(micro_pipeline, out, capsys, *extra):
    from llm.__main__ import main
    argv = ["lr-sweep", "--pipeline", str(micro_pipeline["out"]), "--work", str(micro_pipeline["work"]),
            "--tasks", "forget05", "--methods", "GA", "--lrs", "2e-4", "--clips", "1", "--out", str(out),
            *extra]
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_one_row_sweep_on_the_micro_pipeline(micro_pipeline, tmp_path, capsys, monkeypatch):
    from conftest import assert_close
    from infra import codehash
    from llm.studies import tofu_results
    out = tmp_path / "sweep.json"
    log = _sweep(micro_pipeline, out, capsys)
    assert "[run ] sweepinit-forget05" in log and "[run ] sweep-forget05-ga-lr0.0002-clip1" in log
    doc = read_sweep(out)
    (row,) = doc["rows"]
    # the same settings as the pipeline's GA run (its lr, clip 1, seed 0, its recipe): the same run,
    # so the row equals that run's log epoch by epoch; a wrong target, data cut or retain log would not
    (ga,) = [r for r in tofu_results.load_results(micro_pipeline["out"]) if r.method == "GA"]
    assert doc["recipe"]["epochs"] == 2 and doc["recipe"]["ds_size"] == 6   # the manifest's recipe
    assert (row["task"], row["method"], row["beta"], row["lr"], row["max_grad_norm"]) == \
        ("forget05", "GA", None, 2e-4, 1.0)
    assert row["epochs"] == [e["epoch"] for e in ga.evals] == [0.0, 0.8, 1.6, 2.0]
    assert_close(row["mu"], [e["summary"]["model_utility"] for e in ga.evals], rel=1e-5)
    assert_close(row["fq"], [e["summary"]["forget_quality"] for e in ga.evals], rel=1e-5)
    assert len(set(row["fq"])) > 1                     # FQ moves, so the comparison means something
    logged = [json.loads(x) for x in (micro_pipeline["out"] / "runs" / f"{ga.id}.jsonl").read_text().splitlines()]
    grads = [t["grad_norm"] for t in logged if t.get("event") == "train"]
    assert_close(row["grad_norm_by_epoch"], [sum(grads[:2]) / 2, sum(grads[2:4]) / 2], rel=1e-4)
    assert row["final_mu"] == row["mu"][-1] and row["initial_mu"] == row["mu"][0]
    assert row["collapse_epoch"] == collapse_epoch(row["epochs"], row["mu"])
    assert row["best_fq"] == max(f for e, m, f in zip(row["epochs"], row["mu"], row["fq"])
                                 if e > 0 and m >= 0.5 * row["mu"][0])
    # each row is a stage in --work, named in the file by its hash
    (stage,) = micro_pipeline["work"].glob("sweep-forget05-ga-lr0.0002-clip1-*/stage.json")
    assert stage.parent.name.endswith(row["stage"])
    # the figure draws the file the sweep wrote
    from figures.fig_tofu_lr_sweep import main as figure
    assert figure(["--sweep", str(out), "--out", str(tmp_path / "fig")]) == 0
    # a re-run finds the row done; an edit of code the row does not reach changes nothing ...
    assert "[run ]" not in _sweep(micro_pipeline, out, capsys)
    real = codehash.module_source

    def edited(target):
        return lambda name: real(name) + (b"\n# edited\n" if name == target else b"")

    monkeypatch.setattr(codehash, "module_source", edited("simulations.theorem2"))
    assert "[run ]" not in _sweep(micro_pipeline, out, capsys)
    # ... while an edit of the trainer that produced it makes the row miss and run again
    monkeypatch.setattr(codehash, "module_source", edited("llm.train.loop"))
    log = _sweep(micro_pipeline, out, capsys)
    assert "[run ] sweep-forget05-ga-lr0.0002-clip1" in log
    rerun = read_sweep(out)["rows"][0]
    assert rerun["stage"] != row["stage"] and rerun["mu"] == row["mu"] and rerun["fq"] == row["fq"]


@pytest.mark.slow
def test_sweep_refuses_a_pipeline_without_the_task(micro_pipeline, tmp_path, capsys):
    from llm.__main__ import main
    code = main(["lr-sweep", "--pipeline", str(micro_pipeline["out"]), "--work", str(micro_pipeline["work"]),
                 "--tasks", "forget10", "--out", str(tmp_path / "sweep.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--tasks forget10" in err
    assert not (tmp_path / "sweep.json").exists()
