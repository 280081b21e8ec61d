"""No number without its inputs, and one line for everyday mistakes (issue 19, items 5 and 6).

Every float flag of every entry point refuses NaN / inf at parse time; Ctrl-C is one line and exit
130; output paths are checked before any compute; a non-finite value in a log read back is refused
naming the file and key; privleak refuses a retain log scored with another Min-K% k and, without a
retain log, uses open-unlearning's reference AUC 0.5 and says so; a result folder whose pipeline
stopped early is refused by the figures and the claims unless asked. CLIs run in-process through
their ``main(argv)``: exit code, one line on stderr, no output file left behind.
"""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from infra import cli
from llm.evaluate import logs as eval_logs, membership as eval_mia, summary as eval_summary, mia
from llm.studies import tofu_results

# ---- float flags: NaN / inf refused at parse time, for every entry point -----------------------

#: every `python -m` entry point that parses flags: (module, function, leading argv)
ENTRY_POINTS = [
    ("llm.__main__", "main", ["finetune"]), ("llm.__main__", "main", ["unlearn"]),
    ("llm.evaluate.cli", "main", []), ("llm.pipeline.cli", "main", []), ("llm.studies.collapse_rate", "main", []),
    ("llm.studies.lr_sweep", "main", []), ("llm.memory", "main", []), ("llm.studies.tofu_claims", "main", []),
    ("simulations.collapse_rate", "main", []), ("simulations.synthetic", "main", []),
    ("theory.__main__", "main", []), ("figures.__main__", "main", []),
    ("figures.fig5_tofu_tradeoff", "main", []), ("figures.fig3_beta_limit", "main", []),
    ("figures.fig_llm_collapse_rate", "main", []), ("figures.fig_tofu_lr_sweep", "main", []),
]


class _Captured(Exception):
    pass


def _parser_of(module, func, lead, monkeypatch):
    """The infra.cli.Parser an entry point builds (caught at parse_args, before any work)."""
    seen = {}

    def capture(self, args=None, namespace=None):
        seen["parser"] = self
        raise _Captured

    monkeypatch.setattr(cli.Parser, "parse_args", capture)
    with pytest.raises(_Captured):
        getattr(importlib.import_module(module), func)(list(lead))
    monkeypatch.undo()
    return seen["parser"]


def _float_flags(p) -> list[str]:
    return [a.option_strings[0] for a in p._actions
            if a.option_strings and p._registry_get("type", a.type, a.type) is cli.finite_float]


@pytest.mark.parametrize("module,func,lead", ENTRY_POINTS, ids=lambda x: str(x))
def test_every_float_flag_refuses_non_finite_values(module, func, lead, monkeypatch, capsys):
    p = _parser_of(module, func, lead, monkeypatch)
    assert isinstance(p, cli.Parser)
    declared = [a.option_strings[0] for a in p._actions if a.option_strings and a.type is float]
    assert _float_flags(p) == declared  # every type=float flag goes through finite_float
    main = getattr(importlib.import_module(module), func)
    for flag in declared:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(SystemExit) as exc:
                main([*lead, f"{flag}={bad}"])  # "=": argparse would take -inf for a flag
            assert exc.value.code == cli.EXIT_USAGE
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and flag in err and "not a finite number" in err


def test_float_flags_exist_where_expected(monkeypatch):
    """The generated training flags and the collapse-rate knobs are among the checked ones."""
    unlearn = _float_flags(_parser_of("llm.__main__", "main", ["unlearn"], monkeypatch))
    assert {"--max-grad-norm", "--lr", "--beta"} <= set(unlearn)
    rate = _float_flags(_parser_of("llm.studies.collapse_rate", "main", [], monkeypatch))
    assert {"--threshold", "--max-grad-norm", "--lr", "--beta"} <= set(rate)
    assert cli.finite_float("1e-3") == 1e-3


def test_collapse_rate_config_refuses_nan_through_the_api_too():
    from llm.studies.collapse_rate import Config
    for knob in ("max_grad_norm", "threshold", "lr"):
        with pytest.raises(ValueError, match="finite"):
            Config(**{knob: float("nan")}).validate()


# ---- Ctrl-C ------------------------------------------------------------------------------------

def _unless_escaped(call):
    """``call()``; a KeyboardInterrupt that escapes fails the test (instead of stopping pytest)."""
    try:
        return call()
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def body(args):
        raise KeyboardInterrupt
    assert _unless_escaped(lambda: cli.run("prog", body, None)) == cli.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


def test_ctrl_c_in_a_command_outside_cli_run_is_one_line(tmp_path, monkeypatch, capsys):
    """llm.train.loop's command line does not go through cli.run: the dispatcher catches it."""
    import llm.__main__ as dispatcher
    import llm.train.loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(llm.train.loop, "_train", interrupted)
    assert _unless_escaped(lambda: dispatcher.main(["finetune", "--model", "tiny", "--out",
                                                    str(tmp_path / "m")])) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m llm finetune: stopped: interrupted")


# ---- output paths checked before any compute ---------------------------------------------------

def _one_line(capsys, *needles):
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return out


def _no_compute(*a, **k):
    raise AssertionError("compute reached before the output path was checked")


def test_eval_out_file_refused_before_loading_a_model(tmp_path, tofu_dir, monkeypatch, capsys):
    import llm.models
    from llm.evaluate import cli as evaluate
    monkeypatch.setattr(llm.models, "load_model_and_tokenizer", _no_compute)
    target = tmp_path / "taken"
    target.write_text("a file")
    argv = ["--model", "tiny", "--forget", "forget01", "--data-dir", str(tofu_dir), "--out", str(target)]
    assert evaluate.main(argv) == 2
    _one_line(capsys, "--out", "is a file")
    assert target.read_text() == "a file"


def test_pipeline_out_file_refused_before_any_stage(tmp_path, tofu_dir, monkeypatch, capsys):
    from llm.pipeline import cli as pipeline_cli
    monkeypatch.setattr(pipeline_cli, "run_pipeline", _no_compute)
    target = tmp_path / "taken"
    target.write_text("a file")
    argv = ["--data-dir", str(tofu_dir), "--out", str(target), "--work", str(tmp_path / "w")]
    assert pipeline_cli.main(argv) == 2
    _one_line(capsys, "--out", "is a file")
    argv = ["--data-dir", str(tofu_dir), "--out", str(tmp_path / "o"), "--work", str(target / "sub")]
    assert pipeline_cli.main(argv) == 2
    _one_line(capsys, "--work", "is a file")
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_collapse_rate_results_checked_before_the_run(tmp_path, tofu_dir, monkeypatch, capsys):
    from llm.studies import collapse_rate
    monkeypatch.setattr(collapse_rate, "run", _no_compute)
    target = tmp_path / "taken"
    target.write_text("a file")
    base = ["--data-dir", str(tofu_dir), "--quick", "--cache", str(tmp_path / "cache")]
    assert collapse_rate.main([*base, "--results", str(target)]) == 2
    _one_line(capsys, "--results", "is a file")
    (tmp_path / "r" / collapse_rate.RESULT_NAME).mkdir(parents=True)  # the result name is a folder
    assert collapse_rate.main([*base, "--results", str(tmp_path / "r")]) == 2
    _one_line(capsys, "--results", "is a folder")
    assert target.read_text() == "a file" and not (tmp_path / "cache").exists()


def test_collapse_rate_refuses_seeds_that_would_draw_the_same_items(tmp_path, tofu_dir, monkeypatch, capsys):
    from llm.studies import collapse_rate
    from llm.data.tofu import load_split
    monkeypatch.setattr(collapse_rate, "run", _no_compute)
    n = len(load_split("forget01", tofu_dir))
    base = ["--data-dir", str(tofu_dir), "--forget", "forget01", "--results", str(tmp_path / "r"),
            "--cache", str(tmp_path / "c")]
    for n_forget in (n, n + 5):
        assert collapse_rate.main([*base, "--seeds", "2", "--n-forget", str(n_forget)]) == 2
        _one_line(capsys, "--n-forget", f"below {n}")
    assert not (tmp_path / "r").exists()


def test_output_checks_accept_new_nested_paths(tmp_path):
    assert cli.check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert cli.check_output_file(tmp_path / "a" / "f.json", "--x") == tmp_path / "a" / "f.json"
    assert not (tmp_path / "a").exists()  # checking creates nothing


# ---- logs: non-finite values refused, naming file and key --------------------------------------

def _records(shift: float = 0.0) -> dict:
    """Hand-made per-item records of the four tasks (3 items each), no model involved."""
    rng = np.random.default_rng(0)
    records = {}
    for task in eval_summary.EVAL_SETS:
        rec = {}
        for i in range(3):
            item = {"gt": float(rng.uniform(0.5, 2) + shift),
                    "pert": [float(x) for x in rng.uniform(1, 3, 3)],
                    "rouge": {"rougeL_recall": float(rng.uniform()), "rougeL_f1": 0.5}}
            if eval_summary.EVAL_SETS[task][1]:
                item["para"] = float(rng.uniform(0.5, 2) + shift)
            rec[str(i)] = item
        records[task] = rec
    return records


def _log(mia_k=None, forget_scores=(1.0, 2.0, 3.0), holdout_scores=(3.5, 4.5, 5.5), shift=0.0) -> dict:
    """A per-item log in our layout with MIA entries; ``mia_k`` recorded in eval_info if given."""
    records = _records(shift)
    scores = {"forget": {a: list(forget_scores) for a in mia.ATTACKS},
              "holdout": {a: list(holdout_scores) for a in mia.ATTACKS}}
    summary = eval_summary.summary_from_records(records, None)
    info = {"forget_split": "forget01", **({"mia_k": mia_k} if mia_k is not None else {})}
    log = eval_logs.render_log(records, summary, info)
    stats = [{"match": np.array([True, False])} for _ in forget_scores]
    log.update(eval_mia.render_mia(scores, stats))
    return log


def _write(path, log) -> str:
    path.write_text(json.dumps(log))  # json.dumps writes NaN as NaN, as a foreign tool might
    return str(path)


def test_nan_in_a_retain_log_is_refused_naming_file_and_key(tmp_path, capsys):
    from llm.evaluate import cli as evaluate
    own = _write(tmp_path / "own.json", _log())
    bad = _log()
    bad["forget_Q_A_PARA_Prob"]["value_by_index"]["1"]["avg_loss"] = float("nan")
    retain = _write(tmp_path / "retain.json", bad)
    assert evaluate.main(["--from-logs", own, "--retain-logs", retain]) == 2
    out = _one_line(capsys, "retain.json", "NaN", "forget_Q_A_PARA_Prob.value_by_index.1.avg_loss")
    assert out == ""  # no JSON with "forget_quality": NaN printed
    # the same log, loaded by a caller and handed over as a dict
    with pytest.raises(eval_summary.EvalError, match="non-finite value nan at forget_Q_A_PARA_Prob"):
        eval_logs.summarize(_log(), bad)


def test_non_finite_in_an_eval_log_or_a_run_log_is_refused(tmp_path, capsys):
    from llm.evaluate import cli as evaluate
    bad = _log()
    bad["retain_Q_A_Prob"]["value_by_index"]["0"]["avg_loss"] = float("inf")
    assert evaluate.main(["--from-logs", _write(tmp_path / "own.json", bad)]) == 2
    _one_line(capsys, "own.json", "Infinity", "retain_Q_A_Prob.value_by_index.0.avg_loss")
    (tmp_path / "big.json").write_text(json.dumps(_log()).replace('"avg_loss": 1.', '"avg_loss": 1e999', 1))
    assert evaluate.main(["--from-logs", str(tmp_path / "big.json")]) == 2
    _one_line(capsys, "big.json", "1e999")
    root = _results(tmp_path / "res", 1, 1)
    run_log = root / "runs" / "r0.jsonl"
    rows = run_log.read_text().splitlines()
    rows[1] = rows[1].replace('"forget_quality": 0.5', '"forget_quality": NaN')
    run_log.write_text("\n".join(rows) + "\n")
    with pytest.raises(tofu_results.ResultsError, match=r"r0.jsonl:2: non-finite value NaN at summary.forget_quality"):
        tofu_results.load_results(root)


# ---- privleak: the same Min-K% k, and a recorded reference ------------------------------------

def test_privleak_refuses_a_retain_log_scored_with_another_k(tmp_path, capsys):
    from llm.evaluate import cli as evaluate
    mixed = (2.5, 3.5, 4.5)  # AUC 8/9: a retain reference with a defined privleak
    own = _write(tmp_path / "own.json", _log(mia_k=0.2, holdout_scores=mixed))
    same = _write(tmp_path / "same.json", _log(mia_k=0.2, holdout_scores=mixed))
    other = _write(tmp_path / "other.json", _log(mia_k=0.4, holdout_scores=mixed))
    unrecorded = _write(tmp_path / "ou.json", _log(holdout_scores=mixed))  # open-unlearning's: k 0.4 implied
    s = eval_logs.summarize(own, same, which="ou")
    assert s["privleak"] == 0.0 and s["privleak_reference"] == "retain_log"  # the truth: 0
    for retain in (other, unrecorded):
        assert evaluate.main(["--from-logs", own, "--retain-logs", retain, "--metrics", "ou"]) == 2
        assert _one_line(capsys, "--mia-k 0.4", "0.2") == ""
    # with the paper's metrics privleak is not computed, so k does not matter
    assert evaluate.main(["--from-logs", own, "--retain-logs", other]) == 0
    capsys.readouterr()


def test_model_eval_refuses_the_k_mismatch_before_loading_a_model(tmp_path, tofu_dir, monkeypatch, capsys):
    import llm.models
    from llm.evaluate import cli as evaluate
    monkeypatch.setattr(llm.models, "load_model_and_tokenizer", _no_compute)
    retain = _write(tmp_path / "retain.json", _log(mia_k=0.4))
    argv = ["--model", "tiny", "--forget", "forget01", "--data-dir", str(tofu_dir), "--metrics", "ou",
            "--retain-logs", retain, "--mia-k", "0.2", "--out", str(tmp_path / "out")]
    assert evaluate.main(argv) == 2
    _one_line(capsys, "--mia-k")
    assert not (tmp_path / "out").exists()


def test_privleak_without_a_retain_log_uses_open_unlearnings_reference(tmp_path):
    # forget scores all below holdout: AUC 1, so privleak = ((1 - 1) - 0.5) / 0.5 x 100 = -100
    s = eval_logs.summarize(_log(mia_k=0.4), None, which="ou")
    assert s["privleak"] == pytest.approx(-100.0)
    assert (s["privleak_reference"], s["privleak_reference_auc"]) == ("default", mia.DEFAULT_RETAIN_AUC)
    assert mia.DEFAULT_RETAIN_AUC == 0.5   # open-unlearning configs/eval/tofu_metrics/privleak.yaml ref_value
    # the same AUC against a retain log at chance gives the same number, recorded as the log's
    chance = _log(mia_k=0.4, forget_scores=(1.0, 2.0, 3.0), holdout_scores=(1.0, 2.0, 3.0))
    s = eval_logs.summarize(_log(mia_k=0.4), chance, which="ou")
    assert s["privleak"] == pytest.approx(-100.0) and s["privleak_reference"] == "retain_log"


# ---- a result folder whose pipeline stopped early ---------------------------------------------

def _results(root, done: int, planned: int):
    """A pipeline result folder with ``done`` of ``planned`` runs (manifest as llm.pipeline.run writes it)."""
    from llm.pipeline.logs import mark_progress
    (root / "runs").mkdir(parents=True)
    runs = []
    for i in range(done):
        meta = {"event": "meta", "id": f"r{i}", "task": "forget01", "method": "NPO", "seed": i,
                "knobs": {"rt_weight": 0.0}, "tag": "", "steps_per_epoch": 1}
        evals = [{"event": "eval", "step": s, "epoch": float(s), "summary": {
            "forget_quality": 0.5, "model_utility": 0.6, "numerics": "exact"}} for s in (0, 1)]
        (root / "runs" / f"r{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [meta, *evals]))
        runs.append({"id": f"r{i}", "log": f"runs/r{i}.jsonl"})
    manifest = {"schema": 1, "preset": "test", "device": "cpu", "runs": runs}
    (root / "manifest.json").write_text(json.dumps(mark_progress(manifest, [f"r{i}" for i in range(planned)])))
    return root


def test_incomplete_results_are_refused_unless_asked(tmp_path, capsys):
    from llm.studies import tofu_claims
    root = _results(tmp_path / "res", 1, 2)
    with pytest.raises(tofu_results.ResultsError, match="incomplete.*1 of 2 planned runs.*--allow-incomplete"):
        tofu_results.load_results(root)
    assert len(tofu_results.load_results(root, allow_incomplete=True)) == 1
    assert "INCOMPLETE: 1 of 2" in tofu_results.describe(root)
    assert tofu_claims.main(["--from-results", str(root)]) == 2
    _one_line(capsys, "incomplete", "--allow-incomplete")
    assert tofu_claims.main(["--from-results", str(root), "--allow-incomplete", "--json"]) == 0
    capsys.readouterr()
    full = _results(tmp_path / "full", 2, 2)
    assert json.loads((full / "manifest.json").read_text())["complete"] is True
    assert len(tofu_results.load_results(full)) == 2


def test_figures_refuse_incomplete_results_in_one_line(tmp_path, capsys):
    from figures import fig5_tofu_tradeoff as fig5
    root = _results(tmp_path / "res", 1, 2)
    out = tmp_path / "figs"
    assert fig5.main(["--from-results", str(root), "--out", str(out)]) == 2
    _one_line(capsys, "incomplete", "--allow-incomplete")
    assert not out.exists()
