"""The lr sweep's file: the reader accepts a well-formed file and rejects a malformed one in one line."""
from __future__ import annotations

import json

import pytest

from llm.lr_sweep import SweepError, collapse_epoch, plan, read_sweep

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


def test_plan_puts_the_calibration_runs_first():
    specs = plan(lrs=(1e-4, 3e-4), betas=(0.1, 1.0))
    assert [(s.task, s.method, s.max_grad_norm) for s in specs[:2]] == [("forget10", "GA", 1.0)] * 2
    assert len(specs) == 2 * 3 * 2 * 2 and len({s.key() for s in specs}) == len(specs)


@pytest.mark.parametrize("args, message", [
    (["--lrs", "0"], "--lrs and --betas must be > 0"),
    (["--methods", "DPO"], "--methods GA and/or NPO"),
    (["--bogus"], "unrecognized arguments"),
    (["--work", "MISSING"], "expected one finished data-* stage"),
])
def test_sweep_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    from llm.__main__ import main
    args = [str(tmp_path / "missing") if a == "MISSING" else a for a in args]
    try:
        code = main(["lr-sweep", *args, "--out", str(tmp_path / "sweep.json")])
    except SystemExit as exc:  # a usage error leaves from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("python -m llm lr-sweep: error: ")
    assert not (tmp_path / "sweep.json").exists()
