"""The attacks on unlearning (llm/evaluate/quantize.py, llm/studies/relearn.py, llm/studies/attacks.py, figures/fig_attacks.py)."""
from __future__ import annotations

import json

import pytest
import torch

from llm.evaluate import quantize
from llm.evaluate.quantize import quantize_model, quantize_weight


# ---- quantization -------------------------------------------------------------------------------

def _on_grid(rows, cols, bits, group, seed=0):
    """Weights q * s with integer q in [-qmax, qmax], each group holding +-qmax, and power-of-two
    scales s (so q * s and the recomputed scale absmax / qmax are exact in binary)."""
    g = torch.Generator().manual_seed(seed)
    qmax = 2 ** (bits - 1) - 1
    q = torch.randint(-qmax, qmax + 1, (rows, cols), generator=g).double()
    n_groups = -(-cols // group)
    scales = 2.0 ** torch.randint(-12, -2, (rows, n_groups), generator=g).double()
    for k in range(n_groups):
        q[:, k * group] = qmax * torch.where(torch.rand(rows, generator=g) < 0.5, -1.0, 1.0).double()
    s = scales.repeat_interleave(group, 1)[:, :cols]
    return (q * s).float(), s


@pytest.mark.parametrize("bits,group,cols", [(4, 8, 32), (4, 16, 40), (8, 128, 64), (8, 32, 100)])
def test_weights_on_the_grid_round_trip_exactly(bits, group, cols):
    w, _ = _on_grid(6, cols, bits, group)
    assert torch.equal(quantize_weight(w, bits, group), w)


def test_int4_error_is_at_most_half_a_step_per_group_and_not_zero():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 70, generator=g)  # 70 = 4 groups of 16 + a short group of 6
    q = quantize_weight(w, 4, 16)
    assert q.dtype == w.dtype and q.shape == w.shape
    pad = torch.nn.functional.pad(w.double(), (0, 10)).reshape(16, 5, 16)
    step = (pad.abs().amax(-1) / 7).repeat_interleave(16, 1)[:, :70]
    err = (q.double() - w.double()).abs()
    assert (err <= step / 2 + 1e-7).all()
    assert (err > 0).float().mean() > 0.5          # it did round (the bound alone holds for q = w)
    assert len(torch.unique(q[0, :16])) <= 15      # at most 2 * 7 + 1 levels per group


def test_all_zero_group_stays_zero():
    w = torch.zeros(2, 8)
    w[0, 4:] = 1.0
    assert torch.equal(quantize_weight(w, 4, 4), w)


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    from llm.models import load_model_and_tokenizer
    return load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=3)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_int8_leaves_the_model_nearly_unchanged_and_int4_less_so(tiny):
    """Stated tolerance: int8 with groups of 128 changes the tiny model's weights by < 1 % in norm
    (measured 0.65 %) and its next-token probabilities by < 1e-4 (max abs; measured 8e-6);
    int4 moves both more than 5x as much (measured 0.12 and 1.2e-4)."""
    import copy
    model, tok = tiny
    ids = torch.tensor([tok("Who wrote The Silent Harbour? The author is")["input_ids"]])
    ref = _logits(model, ids)
    out = {}
    for scheme in ("int8", "int4"):
        m = copy.deepcopy(model)
        head = m.lm_head.weight.detach().clone()
        stats = quantize_model(m, scheme, 128)
        assert torch.equal(m.lm_head.weight, head)   # the output head is kept
        assert stats["layers"] == sum(isinstance(x, torch.nn.Linear) for x in m.modules()) - 1
        probs = torch.softmax(_logits(m, ids), -1) - torch.softmax(ref, -1)
        out[scheme] = (float(probs.abs().max()), stats["rel_change"])
    assert out["int8"][0] < 1e-4 and out["int8"][1] < 0.01
    assert out["int4"][0] > 5 * out["int8"][0] and out["int4"][1] > 5 * out["int8"][1]


def test_bad_scheme_and_group_size_are_one_line():
    for args in (("int3", 128), ("int4", 0)):
        with pytest.raises(quantize.QuantizeError):
            quantize.check_scheme(*args)


# ---- command lines: bad input -------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--relearn-split", "thirds"], "unknown --relearn-split 'thirds'"),
    (["--fq"], "--fq needs the retain model's log"),
])
def test_relearn_bad_input_is_one_line(argv, needle, tofu_dir, tmp_path, capsys):
    from llm.studies import relearn
    code = relearn.main(["--model", "tiny", "--data-dir", str(tofu_dir), "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


def test_eval_bad_quantize_is_one_line(tofu_dir, capsys):
    from llm.evaluate import cli as evaluate
    code = evaluate.main(["--model", "tiny", "--forget", "forget01", "--data-dir", str(tofu_dir),
                          "--quantize", "int2"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown --quantize 'int2'" in err and len(err.strip().splitlines()) == 1


def test_split_indices_are_disjoint_whole_authors():
    from llm.studies.relearn import RelearnError, split_indices
    a, b = split_indices(80, "first_half")
    assert a == list(range(40)) and b == list(range(40, 80))
    assert split_indices(80, "second_half") == (b, a)
    a, b = split_indices(40, "half_per_author")
    assert a == list(range(10)) + list(range(20, 30)) and not set(a) & set(b) and len(a + b) == 40
    with pytest.raises(RelearnError, match="at least 2 forget authors"):
        split_indices(20, "first_half")


# ---- relearning on the fixture ------------------------------------------------------------------

@pytest.fixture(scope="module")
def relearned(tofu_dir, tmp_path_factory):
    """Two never-trained tiny models (seeds 0, 1): K = 0 and K = 3 on seed 0, K = 3 on seed 1."""
    from conftest import save_tiny_target
    from llm.studies.relearn import RelearnConfig, relearn_curve
    root = tmp_path_factory.mktemp("relearn")
    models = [str(save_tiny_target(tofu_dir, root / f"m{s}", s)) for s in (0, 1)]
    torch.set_num_threads(1)
    cfg = dict(forget="forget01", split="first_half", lr=3e-3, batch_size=4, eval_every=3,
               data_dir=str(tofu_dir), max_new_tokens=4, seed=0)
    out = {"models": models, "cfg": cfg}
    out["k0"] = relearn_curve(models[0], RelearnConfig(model=models[0], steps=0, **cfg), root / "k0")
    out["k3"] = relearn_curve(models[0], RelearnConfig(model=models[0], steps=3, **cfg), root / "k3")
    out["base"] = relearn_curve(models[1], RelearnConfig(model=models[1], steps=3, **cfg), root / "b")
    return out


@pytest.mark.slow
def test_relearning_zero_steps_changes_nothing(relearned, tofu_dir):
    """K = 0: one eval row, equal to the full TOFU evaluation (llm.evaluate.scoring.evaluate_model) of the
    untouched model cut to the same halves; K = 3 starts from the same row and then moves."""
    from llm.evaluate.logs import records_of
    from llm.models import load_model_and_tokenizer
    from llm.studies.relearn import _half_metrics, split_indices
    from llm.evaluate.scoring import evaluate_model
    k0, k3 = relearned["k0"], relearned["k3"]
    assert [r["step"] for r in k0] == [0] and [r["step"] for r in k3] == [0, 3]
    model, tok = load_model_and_tokenizer(relearned["models"][0], data_dir=tofu_dir)
    per_item = evaluate_model(model, tok, "forget01", tofu_dir, max_new_tokens=4)["per_item"]
    rec = records_of(per_item)["forget"]
    a, b = split_indices(40, "first_half")
    for half, idx in (("relearn", a), ("heldout", b)):
        direct = _half_metrics(rec, idx, None)
        for m, v in direct.items():
            assert k0[0][half][m] == pytest.approx(v, rel=1e-6, abs=1e-12), (half, m)
            assert k3[0][half][m] == pytest.approx(v, rel=1e-6, abs=1e-12), (half, m)
    assert k3[-1]["relearn"]["prob"] > 1.2 * k3[0]["relearn"]["prob"]


@pytest.mark.slow
def test_a_model_that_never_learned_recovers_only_as_much_as_the_baseline(relearned):
    """Both models never saw the forget set, so the attack teaches each the same: on the held-out
    half the excess over the baseline (another never-trained model) is small next to what the
    attack changes. Statistical at this size (two random inits): a CLI run of the same kind (lr
    1e-3, 3 steps) measured |excess| / |gain| = 0.16 on answer probability and 0.26 on truth
    ratio; the bound is 0.5."""
    from llm.studies.relearn import recovery
    rec = recovery(relearned["k3"], relearned["base"])
    for m in ("prob", "truth_ratio"):
        r = rec["heldout"][m]
        assert abs(r["gain"]) > 0
        assert abs(r["excess"]) < 0.5 * abs(r["gain"]), (m, r)


# ---- the figure and table read the attacks file -------------------------------------------------

def _doc():
    """A hand-made attacks file as the pipeline writes it (each method's final and best-FQ model;
    GA+RT's best-FQ model is the target): the figure must draw exactly these numbers."""
    def curve(p0, p1):
        return [{"step": s, "relearn": {"prob": p0 * (1 + s), "rouge": 0.1, "truth_ratio": 0.5},
                 "heldout": {"prob": p1 * (1 + s), "rouge": 0.2, "truth_ratio": 0.6}} for s in (0, 2, 4)]

    def ev(fq, rouge, mu=0.5):
        return {"forget_quality": fq, "model_utility": mu, "forget_truth_ratio": 0.6,
                "forget_Q_A_Prob": 0.01, "forget_Q_A_ROUGE": rouge}

    from llm.studies.attacks import ATTACKS_SCHEMA
    from llm.studies.relearn import recovery
    base = curve(1e-3, 2e-3)
    models = {}
    for name, extra, c, e in (
            ("retain", {"role": "retain"}, base, ev(1.0, 0.1)),
            ("target", {"role": "target"}, curve(9e-3, 8e-3), ev(1e-4, 0.9, 0.6)),
            ("NPO+RT final", {"variant": "final"}, curve(3e-3, 5e-3), ev(0.4, 0.2)),
            ("NPO+RT best-FQ", {"variant": "best_fq", "epoch": 2.0, "step": 4, "forget_quality": 0.6,
                                "model": "best_fq"}, curve(2e-3, 4e-3), ev(0.6, 0.25, 0.55)),
            ("GA+RT final", {"variant": "final"}, curve(4e-3, 7e-3), ev(0.05, 0.3)),
            ("GA+RT best-FQ", {"variant": "best_fq", "epoch": 0.0, "step": 0, "forget_quality": 1e-4,
                               "model": "target", "same_as": "target"}, curve(9e-3, 8e-3), ev(1e-4, 0.9, 0.6))):
        role = extra.get("role", "method")
        meta = {} if role != "method" else {"method": name.split()[0], "seed": 0}
        grid = {"grid_vs_target": {"codes_equal": 0.9}} if name == "NPO+RT final" else {}
        q = {**ev(e["forget_quality"] / 2, e["forget_Q_A_ROUGE"] + 0.25, e["model_utility"] - 0.1),
             "quantization": grid}
        models[name] = {"role": role, **meta, **extra, "eval": {"none": e, "int4": q},
                        "relearn": {"curve": c, "recovery": recovery(c, base)}}
    return {"schema": ATTACKS_SCHEMA, "forget": "forget01", "schemes": ["int4"], "relearn": {"steps": 4},
            "models": models}


LABELS = {"retain": "retain (baseline)", "target": "target (reference)", "NPO+RT final": "NPO+RT final",
          "NPO+RT best-FQ": "NPO+RT best-FQ (epoch 2)", "GA+RT final": "GA+RT final",
          "GA+RT best-FQ": "GA+RT best-FQ (epoch 0 = target)"}


def _row(out: str, label: str) -> list[str]:
    row = next(r for r in out.splitlines() if r.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_figure_draws_the_attacks_file_and_table_reads_it(tmp_path, drawn, capsys):
    """Both variants of each method: a line each (the best-FQ one in the method's colour, dashed,
    labelled with its epoch) and a table row each."""
    from conftest import labelled_lines

    from figures import fig_attacks
    doc = _doc()
    path = tmp_path / "attacks.json"
    path.write_text(json.dumps(doc))
    code = fig_attacks.main(["--attacks", str(path), "--out", str(tmp_path / "out"), "--table"])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "out" / "fig_attacks.png").exists()
    axes = drawn[0].axes
    for ax, half in zip(axes, ("relearn", "heldout")):
        lines = labelled_lines(ax)
        assert set(lines) == set(LABELS.values())
        for name, m in doc["models"].items():
            line = lines[LABELS[name]]
            assert list(line.get_xdata()) == [r["step"] for r in m["relearn"]["curve"]]
            assert list(line.get_ydata()) == [r[half]["prob"] for r in m["relearn"]["curve"]]
        for method in ("NPO+RT", "GA+RT"):
            final, best = lines[LABELS[f"{method} final"]], lines[LABELS[f"{method} best-FQ"]]
            assert final.get_color() == best.get_color()
            assert best.get_markerfacecolor() == "none" != final.get_markerfacecolor()
    # FQ, FQ int4, ROUGE, ROUGE int4, prob, prob int4, MU, MU int4, held-out before / after / baseline / excess
    assert _row(out, "GA+RT final")[1:9] == ["0.05", "0.025", "0.3", "0.55", "0.01", "0.01", "0.5", "0.4"]
    assert _row(out, "GA+RT final")[-4:] == ["0.007", "0.035", "0.01", "0.025"]
    assert _row(out, "NPO+RT best-FQ (epoch 2)")[1:9] == ["0.6", "0.3", "0.25", "0.5", "0.01", "0.01",
                                                          "0.55", "0.45"]
    assert _row(out, "GA+RT best-FQ (epoch 0 = target)")[1:] == _row(out, "target (reference)")[1:]
    # int4 codes equal to the target's: recorded for NPO+RT final only
    assert _row(out, "NPO+RT final")[9] == "0.9" and _row(out, "GA+RT final")[9] == "-"
    rows = [r.split("|")[1].strip() for r in out.splitlines() if r.startswith("| ")]
    assert rows[1:] == ["GA+RT final", LABELS["GA+RT best-FQ"], "NPO+RT final", LABELS["NPO+RT best-FQ"],
                        "retain (baseline)", "target (reference)"]


def test_an_attacks_file_of_the_old_schema_gets_one_line(tmp_path, capsys):
    """Schema 1 (final models only, named by method) is refused, naming the command that rewrites it."""
    from figures import fig_attacks
    doc = _doc()
    doc["schema"] = "npo-unlearning/attacks/1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    assert fig_attacks.main(["--attacks", str(path), "--out", str(tmp_path / "out"), "--table"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema npo-unlearning/attacks/1" in err
    assert "python -m llm pipeline --attacks" in err and not (tmp_path / "out").exists()


def test_figure_without_a_file_says_so(tmp_path, monkeypatch, capsys):
    from figures import fig_attacks
    monkeypatch.setattr(fig_attacks, "DEFAULT_ATTACKS", tmp_path / "none" / "forget10_attacks.json")
    assert fig_attacks.main(["--out", str(tmp_path / "out")]) == 0
    assert "no attacks file" in capsys.readouterr().out and not (tmp_path / "out").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert fig_attacks.main(["--attacks", str(bad)]) == 2


def test_figure_default_is_the_committed_attacks_file(tmp_path, capsys):
    """Without --attacks the figure draws the committed results/tofu_cpu_attacks file, from any folder."""
    from figures import fig_attacks
    assert fig_attacks.DEFAULT_ATTACKS.is_file()
    assert fig_attacks.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "fig_attacks.png").stat().st_size > 0


def test_claims_skip_an_older_runs_attacks_file(tmp_path, capsys):
    """A folder that ran --attacks before the file was renamed keeps attacks/<task>.json (schema 1)
    beside the new <task>_attacks.json: the claims read only the latter."""
    import shutil

    from llm.studies import tofu_claims
    from conftest import REPO
    root = tmp_path / "r"
    shutil.copytree(REPO / "results" / "tofu_cpu_attacks", root)
    (root / "attacks" / "forget10.json").write_text(json.dumps({"schema": "npo-unlearning/attacks/1"}))
    assert tofu_claims.main(["--from-results", str(root)]) == 0
    assert "relearning steps" in capsys.readouterr().out


# ---- the pipeline stage -------------------------------------------------------------------------

def _keep(model, tok, fqs: dict, dest):
    """Feed ``KeepBestFQ`` evaluations with the given Forget Quality per step, the model's weights
    moved before every step after 0 (step 0 is the target); returns the keeper and the weights
    each step was evaluated with."""
    from llm.pipeline.best_fq import KeepBestFQ
    keeper = KeepBestFQ(lambda m, t, step, epoch: {"forget_quality": fqs[step]}, dest)
    seen = {}
    for step in sorted(fqs):
        if step:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-2 * step)
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}
        keeper(model, tok, step, step / 2)
    return keeper, seen


def test_best_fq_model_is_the_earliest_best_evaluation(tiny, tmp_path):
    """FQ 0.2, 0.5, 0.5, 0.3 at steps 0-3: the model saved is step 1's (the tie at step 2 goes to
    the earliest), reloaded weight for weight; no temporary folder is left."""
    import copy

    from transformers import AutoModelForCausalLM
    model = copy.deepcopy(tiny[0])
    keeper, seen = _keep(model, tiny[1], {0: 0.2, 1: 0.5, 2: 0.5, 3: 0.3}, tmp_path / "best_fq")
    assert keeper.best == {"step": 1, "epoch": 0.5, "forget_quality": 0.5, "model": "best_fq"}
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "best_fq").state_dict()
    assert saved and all(torch.equal(v, seen[1][k]) for k, v in saved.items())
    assert not all(torch.equal(v, seen[2][k]) for k, v in saved.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_fq"]
    assert model.config.use_cache == tiny[0].config.use_cache


def test_best_fq_at_epoch_0_points_at_the_target(tiny, tmp_path):
    """The initial evaluation (the target) stays the best, also against a later tie: nothing is
    copied, and a stale copy from an earlier attempt is removed."""
    import copy
    (tmp_path / "best_fq").mkdir()
    (tmp_path / "best_fq" / "config.json").write_text("{}")
    keeper, _ = _keep(copy.deepcopy(tiny[0]), tiny[1], {0: 0.9, 1: 0.5, 2: 0.9}, tmp_path / "best_fq")
    assert keeper.best == {"step": 0, "epoch": 0.0, "forget_quality": 0.9, "model": "target"}
    assert list(tmp_path.iterdir()) == []


def test_best_fq_save_is_not_training_time(tmp_path):
    """Saving the best-FQ model happens between evaluations; the recorder does not count it as
    training time (it would inflate train_seconds and deflate tokens/s by a 7B model's save)."""
    import time
    import types

    from llm.pipeline.best_fq import KeepBestFQ
    from llm.pipeline.recording import EvalRecorder

    class SlowSave(torch.nn.Linear):
        def __init__(self):
            super().__init__(2, 2)
            self.config = types.SimpleNamespace(use_cache=False)

        def save_pretrained(self, path, **kw):
            time.sleep(0.5)
            (tmp_path / "saved").mkdir(exist_ok=True)
            path.mkdir(parents=True, exist_ok=True)

    class Tok:
        def save_pretrained(self, path):
            (path / "tokenizer_config.json").write_text("{}")

    fqs = {0: 0.1, 1: 0.5, 2: 0.6}
    rec = EvalRecorder(lambda m, t: {"forget_quality": fqs[len(rec.rows)]}, None, {}, "qa")
    keeper = KeepBestFQ(rec, tmp_path / "best_fq")
    for step in fqs:
        keeper(SlowSave(), Tok(), step, float(step))
    assert (tmp_path / "saved").exists() and keeper.best["step"] == 2
    assert rec.train_seconds < 0.3     # two 0.5 s saves, no training at all


def test_best_fq_path_each_case(tmp_path):
    """Which folder the attacks stage attacks as a run's best-FQ model, for each meta-row case."""
    from llm.pipeline.run import best_fq_path
    run = tmp_path / "run"
    kept = {"step": 20, "epoch": 2.0, "forget_quality": 0.5, "model": "best_fq"}
    assert best_fq_path(kept, 100, run, "/t") == str(run / "best_fq")
    assert best_fq_path({**kept, "step": 100}, 100, run, "/t") == str(run / "model")
    assert best_fq_path({**kept, "step": 0, "model": "target"}, 100, run, "/t") == "/t"


def test_run_pipeline_refuses_attacks_under_fsdp_through_the_api(tofu_dir, tmp_path):
    """The API refuses what the CLI refuses (an Options built by hand), before any stage."""
    from llm.pipeline.plan import PRESETS, PipelineError
    from llm.pipeline.run import Options, run_pipeline
    o = Options("cpu", PRESETS["cpu"], tofu_dir, tmp_path / "out", tmp_path / "work", "cpu", False,
                False, False, "fsdp", True)
    with pytest.raises(PipelineError, match="--attacks does not run under --strategy fsdp"):
        run_pipeline(o)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", ["--strategy", "accelerate"])
def test_pipeline_refuses_attacks_under_fsdp_in_one_line(how, tofu_dir, tmp_path, monkeypatch, capsys):
    """FSDP evaluates a sharded model on every rank; keeping the best-FQ model there is refused
    before anything runs (--strategy fsdp, or accelerate's FSDP config)."""
    from llm.pipeline import cli as pipeline_cli
    argv = ["--data-dir", str(tofu_dir), "--tasks", "forget05", "--methods", "GA", "--attacks",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    if how == "accelerate":
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    else:
        argv += ["--strategy", "fsdp"]
    assert pipeline_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--attacks does not run under --strategy fsdp" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pipeline_attacks_stage_writes_the_file_and_resumes(tofu_dir, tmp_path, capsys):
    """forget05 at 2 QA pairs per author (20 items: 10 relearned, 10 held out), GA and NPO+RT:
    both attacks on each run's final model and its best-FQ epoch's, the target and the retain
    model; each evaluation of a kept model reproduces the Forget Quality its run recorded for that
    epoch (the best epoch being the earliest highest); a best epoch that is the last one is the
    final model, attacked once (NPO+RT here: its best is step 10 of 10); a rerun skips the stage."""
    from llm.pipeline import cli as pipeline_cli
    from llm.studies.attacks import read_attacks
    from llm.pipeline.run import ATTACK_STEPS
    argv = ["--data-dir", str(tofu_dir), "--tasks", "forget05", "--methods", "GA", "NPO+RT",
            "--qa-per-author", "2", "--ft-epochs", "1", "--unlearn-epochs", "2", "--ds-size", "20",
            "--max-new-tokens", "4", "--no-extras", "--attacks",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    assert pipeline_cli.main(argv) == 0
    doc = read_attacks(tmp_path / "out" / "attacks" / "forget05_attacks.json")
    assert {n: (m["role"], m.get("variant")) for n, m in doc["models"].items()} == {
        "retain": ("retain", None), "target": ("target", None), "GA final": ("method", "final"),
        "GA best-FQ": ("method", "best_fq"), "NPO+RT final": ("method", "final"),
        "NPO+RT best-FQ": ("method", "best_fq")}
    base = doc["models"]["retain"]["relearn"]["curve"]
    for name, m in doc["models"].items():
        curve = m["relearn"]["curve"]
        assert [r["step"] for r in curve] == list(range(0, ATTACK_STEPS + 1, ATTACK_STEPS // 5))
        assert set(curve[0]) == {"step", "relearn", "heldout"} and "fq" in curve[0]["heldout"]
        r = m["relearn"]["recovery"]["heldout"]["prob"]
        assert r["excess"] == pytest.approx(curve[-1]["heldout"]["prob"] - base[-1]["heldout"]["prob"])
        assert set(m["eval"]) == {"none", "int4"} and m["eval"]["int4"]["quantization"]["bits"] == 4
        assert all(m["eval"][k]["forget_quality"] is not None for k in ("none", "int4"))
    assert doc["models"]["retain"]["eval"]["none"]["forget_quality"] == pytest.approx(1.0)
    for method in ("GA", "NPO+RT"):
        final, best = doc["models"][f"{method} final"], doc["models"][f"{method} best-FQ"]
        stage = next(p for p in (tmp_path / "work").glob("run-*/run.jsonl")
                     if json.loads(p.read_text().splitlines()[0])["id"] == final["run"])
        rows = [json.loads(r) for r in stage.read_text().splitlines()]
        evals = [r for r in rows if r["event"] == "eval"]
        fqs = [r["summary"]["forget_quality"] for r in evals]
        top = evals[fqs.index(max(fqs))]                       # the earliest highest
        assert rows[0]["best_fq"] == best_meta(best) == {"step": top["step"], "epoch": top["epoch"],
                                                         "forget_quality": max(fqs),
                                                         "model": "target" if top["step"] == 0 else "best_fq"}
        assert final["eval"]["none"]["forget_quality"] == pytest.approx(fqs[-1], rel=1e-6)
        assert best["eval"]["none"]["forget_quality"] == pytest.approx(max(fqs), rel=1e-6)
        if top["step"] == 0:
            assert best["same_as"] == "target" and best["eval"] == doc["models"]["target"]["eval"]
        elif top["step"] == evals[-1]["step"]:                  # the final model: attacked once
            assert best["same_as"] == f"{method} final" and best["eval"] == final["eval"]
        else:
            assert (stage.parent / "best_fq" / "config.json").exists() and "same_as" not in best
    assert len({m["relearn"]["curve"][-1]["heldout"]["prob"] for m in doc["models"].values()
                if "same_as" not in m}) == sum("same_as" not in m for m in doc["models"].values())
    capsys.readouterr()
    assert pipeline_cli.main(argv) == 0
    assert "[skip] attacks-forget05" in capsys.readouterr().out
    # the claims table of the same folder gains the two attack rows
    from llm.studies import tofu_claims
    assert tofu_claims.main(["--from-results", str(tmp_path / "out"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["claim"].split(":")[0] for r in rows if "Zhang" in r["claim"] or "Hu et" in r["claim"]] == \
        ["forget05", "forget05"]


def best_meta(entry: dict) -> dict:
    return {k: entry[k] for k in ("step", "epoch", "forget_quality", "model")}


@pytest.mark.slow
def test_pipeline_attacks_score_forget_quality_on_the_evaluated_items(tofu_dir, tmp_path):
    """--ds-size 10 of forget05's 20 items: relearning's per-half Forget Quality needs every forget
    item, so it is off; the before/after-int4 evaluations still score FQ on the 10 items, against
    the pipeline's own retain evaluation of the same items (the retain model against itself: 1)."""
    from llm.pipeline import cli as pipeline_cli
    from llm.studies.attacks import read_attacks
    argv = ["--data-dir", str(tofu_dir), "--tasks", "forget05", "--methods", "GA",
            "--qa-per-author", "2", "--ft-epochs", "1", "--unlearn-epochs", "1", "--ds-size", "10",
            "--max-new-tokens", "4", "--no-extras", "--attacks",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    assert pipeline_cli.main(argv) == 0
    doc = read_attacks(tmp_path / "out" / "attacks" / "forget05_attacks.json")
    assert doc["relearn"]["fq"] is False
    for m in doc["models"].values():
        assert all(m["eval"][k]["forget_quality"] is not None for k in ("none", "int4"))
    assert doc["models"]["retain"]["eval"]["none"]["forget_quality"] == pytest.approx(1.0)


# ---- the two CLIs end to end at micro size -------------------------------------------------------

@pytest.mark.slow
def test_relearn_and_attacks_clis_run_end_to_end(tofu_dir, tmp_path, capsys):
    """``python -m llm relearn`` and ``python -m llm attacks`` on never-trained tiny models: both
    write their documented files, and the attacks file is what the figure reads."""
    from conftest import save_tiny_target
    from llm.studies import attacks, relearn
    from llm.studies.attacks import read_attacks
    torch.set_num_threads(1)
    model, retain = (str(save_tiny_target(tofu_dir, tmp_path / n, s)) for n, s in (("m", 0), ("r", 1)))
    common = ["--forget", "forget01", "--data-dir", str(tofu_dir), "--steps", "2", "--eval-every", "1",
              "--batch-size", "4", "--max-new-tokens", "2"]
    assert relearn.main(["--model", model, "--baseline", retain, *common, "--out", str(tmp_path / "rl")]) == 0
    doc = json.loads((tmp_path / "rl" / "RELEARN.json").read_text())
    assert [row["step"] for row in doc["curve"]] == [0, 1, 2] == [row["step"] for row in doc["baseline"]]
    assert set(doc["recovery"]) == {"relearn", "heldout"} and doc["n_relearn"] + doc["n_heldout"] == 40
    assert (tmp_path / "rl" / "log.jsonl").exists()
    out = tmp_path / "att"
    assert attacks.main(["--model", f"M={model}", "--retain", retain, *common, "--ds-size", "2",
                         "--out", str(out)]) == 0
    doc = read_attacks(next(out.glob("*.json")) if out.is_dir() else out)
    assert set(doc["models"]) >= {"M", "retain"} and doc["schemes"] == ["int4"]


def test_attacks_record_each_models_int4_codes_against_the_target(tofu_dir, tmp_path):
    """With --target, each other model's int4 record holds grid_agreement against the target (the
    quantization attack's mechanism: where codes agree, quantizing undoes the unlearning)."""
    from conftest import save_tiny_target
    from llm.evaluate.quantize import grid_agreement
    from llm.models import load_model_and_tokenizer
    from llm.studies import attacks
    from llm.studies.attacks import read_attacks
    torch.set_num_threads(1)
    m, r, t = (str(save_tiny_target(tofu_dir, tmp_path / n, s)) for n, s in (("m", 0), ("r", 1), ("t", 2)))
    out = tmp_path / "att.json"
    assert attacks.main(["--model", f"M={m}", "--retain", r, "--target", t, "--forget", "forget01",
                         "--data-dir", str(tofu_dir), "--steps", "1", "--eval-every", "1", "--batch-size", "4",
                         "--max-new-tokens", "2", "--ds-size", "2", "--out", str(out)]) == 0
    doc = read_attacks(out)
    load = lambda d: load_model_and_tokenizer(d)[0]
    expected = grid_agreement(load(m), load(t), "int4", 128)
    assert doc["models"]["M"]["eval"]["int4"]["quantization"]["grid_vs_target"] == expected
    assert 0 < expected["codes_equal"] < 1                  # independent inits: some codes agree by chance
    assert "grid_vs_target" in doc["models"]["retain"]["eval"]["int4"]["quantization"]
    assert "grid_vs_target" not in doc["models"]["target"]["eval"]["int4"]["quantization"]


def test_attack_claims_follow_their_stated_rules():
    """Relearning restores if every method's held-out prob after the attack is >= 2x the retain
    baseline's; int4 restores if some method's forget prob moves >= halfway to the quantized target's."""
    from llm.studies.tofu_claims import attack_claims
    doc = _doc()          # held-out after 4 steps: NPO+RT 0.025, GA+RT 0.035, retain 0.01
    relearn, quant = attack_claims(doc)
    assert relearn["holds"] and "retain baseline 0.01" in relearn["measured"]
    assert "NPO+RT 0.025" in relearn["measured"] and "GA+RT 0.035" in relearn["measured"]
    assert not quant["holds"]
    base = doc["models"]["retain"]["relearn"]["recovery"]["heldout"]["prob"]
    base["after"] = 0.0126                                    # 2 x 0.0126 > NPO+RT's 0.025
    assert not attack_claims(doc)[0]["holds"]
    doc["models"]["target"]["eval"]["int4"]["forget_Q_A_Prob"] = 0.9
    doc["models"]["NPO+RT final"]["eval"]["int4"]["forget_Q_A_Prob"] = 0.44   # (0.44-0.01)/(0.89) < 0.5
    assert not attack_claims(doc)[1]["holds"]
    doc["models"]["NPO+RT final"]["eval"]["int4"]["forget_Q_A_Prob"] = 0.46   # > halfway
    assert attack_claims(doc)[1]["holds"]
    assert attack_claims({**doc, "models": {k: v for k, v in doc["models"].items() if k != "retain"}}) == []


def test_figure_draws_a_methods_seeds_as_their_mean_and_range(tmp_path, drawn):
    """Two seeds of one method and variant are one line (their mean) and a shaded band (their
    min..max), labelled once with both best-FQ epochs."""
    import copy

    from matplotlib.collections import PolyCollection
    from conftest import labelled_lines

    from figures import fig_attacks
    doc = _doc()
    for name in ("NPO+RT final", "NPO+RT best-FQ"):
        twin = copy.deepcopy(doc["models"][name])
        twin["seed"] = 1
        for row in twin["relearn"]["curve"]:
            row["heldout"]["prob"] *= 3
        if name.endswith("best-FQ"):
            twin["epoch"] = 5.0
        doc["models"][name.replace("NPO+RT", "NPO+RT s1")] = twin
    path = tmp_path / "attacks.json"
    path.write_text(json.dumps(doc))
    assert fig_attacks.main(["--attacks", str(path), "--out", str(tmp_path / "out")]) == 0
    ax = drawn[0].axes[1]                                   # held-out half
    lines = labelled_lines(ax)
    assert "NPO+RT best-FQ (epochs 2, 5)" in lines and "NPO+RT final" in lines
    one = [r["heldout"]["prob"] for r in doc["models"]["NPO+RT final"]["relearn"]["curve"]]
    assert list(lines["NPO+RT final"].get_ydata()) == pytest.approx([2 * p for p in one])   # mean of p, 3p
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2                                  # the two two-seed lines; one-seed lines have none
    tops = sorted(max(v[:, 1]) for c in bands for v in [c.get_paths()[0].vertices])
    assert tops[-1] == pytest.approx(3 * max(one))
