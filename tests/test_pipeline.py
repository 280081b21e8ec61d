"""llm.pipeline.run: run plan, consistent data subset, content-hashed stages, KL to the initial model,
the CLI's one-line errors, and (slow) a micro end-to-end run that resumes without redoing work."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import MICRO_PIPELINE, assert_close
from infra.stages import Stages
from llm.pipeline import cli as pipeline_cli
from llm.studies import tofu_results
from llm.data.tofu import load_split
from llm.pipeline.plan import PAPER_GRID, PRESETS, Recipe, RunSpec, plan_runs, steps_per_epoch
from llm.pipeline.subset import write_subset


def test_steps_per_epoch_match_the_paper():
    paper = Recipe(epochs=10, lr=1e-5, effective_batch=32, batch_size=4)
    assert [steps_per_epoch(n, paper) for n in (40, 200, 400, 2000, 3600)] == [1, 6, 12, 62, 112]
    cpu = PRESETS["cpu"].unlearn   # 2 QA per author: 4 / 20 / 40 forget items
    assert [steps_per_epoch(n, cpu) for n in (4, 20, 40)] == [1, 5, 10]


def test_plan_has_main_grid_large_rt_and_ablation():
    p = copy.deepcopy(PRESETS["paper"])
    p.seeds = (0, 1)
    runs = plan_runs(p)
    main = [r for r in runs if not r.tag]
    assert len(main) == len(p.tasks) * len(p.methods) * 2
    assert all(r.retain_weight == 1.0 for r in main)
    extra = {(r.task, r.retain_weight) for r in runs if r.tag}
    assert {("forget50", 5.0), ("forget90", 12.0), ("forget10", 0.5), ("forget10", 2.0),
            ("forget10", 5.0)} == extra
    assert len({r.id for r in runs}) == len(runs)
    assert RunSpec("forget10", "NPO", 0, 1.0).rt_weight == 0.0     # no retain term
    assert RunSpec("forget10", "NPO+RT", 0, 5.0).rt_weight == 5.0
    assert plan_runs(p, extras=False) == main


def test_cpu_preset_shares_retain_models():
    p = PRESETS["cpu"]
    assert {t: p.retain_split(t) for t in p.tasks} == {
        "forget01": "retain90", "forget05": "retain90", "forget10": "retain90",
        "forget20": "retain70", "forget30": "retain70", "forget50": "retain10", "forget90": "retain10"}
    # every shared reference never saw the task's forget set: retain splits are first authors
    for t in p.tasks:
        assert int(p.retain_split(t)[6:]) + int(t[6:]) <= 100


def test_subset_is_consistent(tofu_dir, tmp_path):
    counts = write_subset(tofu_dir, tmp_path, qa_per_author=2, tasks=["forget01", "forget10", "forget50"],
                          retain_splits=["retain90"])
    full = load_split("full", tmp_path)
    assert counts["full"] == len(full) == 400
    for task, n_authors in (("forget01", 2), ("forget10", 20), ("forget50", 100)):
        forget = load_split(task, tmp_path)
        assert len(forget) == 2 * n_authors and forget == full[-len(forget):]
        assert load_split(f"retain{100 - int(task[6:]):02d}", tmp_path) + forget == full
    # perturbed eval items are exactly the trained forget items, in the same order
    for task in ("forget01", "forget10"):
        pert = load_split(f"{task}_perturbed", tmp_path)
        assert [r["question"] for r in pert] == [r["question"] for r in load_split(task, tmp_path)]
    # forget50 is evaluated on forget10's perturbed set (the paper's proxy), inside forget50
    proxy = {r["question"] for r in load_split("forget50_perturbed", tmp_path)}
    assert proxy <= {r["question"] for r in load_split("forget50", tmp_path)}
    retain_pert = load_split("retain_perturbed", tmp_path)
    assert {r["question"] for r in retain_pert} <= {r["question"] for r in full}


def test_stages_skip_unchanged_and_redo_dependents(tmp_path):
    calls = []

    def fn(tag):
        def run(path):
            calls.append(tag)
            (path / "out.txt").write_text(tag)
            return {"tag": tag}
        return run

    stages = Stages(tmp_path, log=lambda *a: None)
    a = stages.run("a", {"x": 1}, [], fn("a"))
    b = stages.run("b", {"y": 1}, [a["hash"]], fn("b"))
    assert calls == ["a", "b"]
    assert stages.run("a", {"x": 1}, [], fn("a2"))["info"] == {"tag": "a"}
    assert stages.run("b", {"y": 1}, [a["hash"]], fn("b2"))["path"] == b["path"]
    assert calls == ["a", "b"]                          # both skipped
    a3 = stages.run("a", {"x": 2}, [], fn("a3"))        # config change: new stage ...
    stages.run("b", {"y": 1}, [a3["hash"]], fn("b3"))   # ... and its dependent reruns
    assert calls == ["a", "b", "a3", "b3"]

    def boom(path):
        (path / "partial").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):                  # (code=fn: the same stage's code both times)
        stages.run("c", {}, [], boom, code=fn)
    done = stages.run("c", {}, [], fn("c"), code=fn)    # no marker was written: it reruns
    assert calls[-1] == "c" and not (done["path"] / "partial").exists()
    forced = Stages(tmp_path, force=True, log=lambda *a: None).run("a", {"x": 1}, [], fn("a4"))
    assert calls[-1] == "a4" and forced["path"] == a["path"] and forced["info"] == {"tag": "a4"}
    # what a stage leaves: its output and a stage.json naming config, inputs and hash; the folder
    # is keyed by that hash, and the hash by config and inputs
    assert (forced["path"] / "out.txt").read_text() == "a4"
    marker = json.loads((b["path"] / "stage.json").read_text())
    assert marker["name"] == "b" and marker["config"] == {"y": 1} and marker["inputs"] == [a["hash"]]
    assert b["path"].name == f"b-{marker['hash']}" and (b["path"] / "out.txt").read_text() == "b"
    assert len({a["hash"], a3["hash"], b["hash"]}) == 3
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["a", "a", "b", "b", "c"]


@pytest.mark.slow
def test_reference_kl_is_zero_for_the_initial_model_and_grows(tofu_dir):
    from llm.models import load_model_and_tokenizer
    from llm.pipeline.recording import ReferenceKL
    from theory.objectives import kl_categorical
    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=0)
    items = load_split("forget01", tofu_dir)[:3]
    kl = ReferenceKL(model, tok, {"forget": items}, "llama2", batch_size=2)
    assert kl(model)["forget"] == pytest.approx(0.0, abs=1e-6)
    initial = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    value = kl(model)["forget"]
    # direct per-item mean over answer tokens of KL(initial || current)
    from llm.data.formatting import collate, encode_qa
    per_item = []
    for r in items:
        b = collate([encode_qa(tok, r["question"], r["answer"], "llama2")], tok.pad_token_id)
        mask = b["labels"][0, 1:] != -100
        with torch.no_grad():
            lp0 = torch.log_softmax(initial(input_ids=b["input_ids"]).logits[0, :-1][mask], -1)
            lp1 = torch.log_softmax(model(input_ids=b["input_ids"]).logits[0, :-1][mask], -1)
        per_item.append(kl_categorical(lp0, lp1).mean())
    assert value > 0 and value == pytest.approx(float(torch.stack(per_item).mean()), rel=1e-4)


def test_cpu_preset_runs_every_method_on_forget20_30():
    p = PRESETS["cpu"]
    assert p.seeds == (0,) and PRESETS["paper"].seeds == (0, 1, 2, 3, 4)
    runs = plan_runs(p)
    for task in ("forget20", "forget30"):
        assert {r.method for r in runs if r.task == task} == set(PAPER_GRID)
    # forget20 / 30 keep 40 / 60 authors at 2 QA each: 20 / 30 steps per epoch at batch 4
    assert [steps_per_epoch(n, p.unlearn) for n in (80, 120)] == [20, 30]


@pytest.mark.parametrize("n", [1, 3])
def test_seeds_flag_gives_n_seeds_per_run(n, tofu_dir, capsys):
    assert pipeline_cli.main(["--data-dir", str(tofu_dir), "--dry-run", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert pipeline_cli.main(["--data-dir", str(tofu_dir), "--dry-run", "--json", "--seeds", str(n)]) == 0
    runs = json.loads(capsys.readouterr().out)
    seeds: dict[tuple, set] = {}
    for r in runs:
        seeds.setdefault((r["task"], r["method"], r["retain_weight"]), set()).add(r["seed"])
    assert len(runs) == n * len(default) and len({r["id"] for r in runs}) == len(runs)
    assert set(seeds) == {(r["task"], r["method"], r["retain_weight"]) for r in default}
    assert all(s == set(range(n)) for s in seeds.values())


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--methods", "XX"], "unknown method"),
    (["--tasks", "forget07"], "unknown task"),
    (["--preset", "paper"], "--model PATH"),
    (["--ft-epochs", "0"], "--ft-epochs must be > 0"),
    (["--hp", "layer=1"], "no selected method outside the paper's grid declares it"),
    (["--methods", "RMU", "--hp", "layer=x"], "layer"),
    (["--methods", "RMU", "--hp", "nope=1"], "--hp nope"),
    pytest.param(["--device", "cuda", "--out", "OUT_UNUSED"], "torch sees no GPU here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_cli_user_errors_are_one_line(argv, needle, tofu_dir, capsys, tmp_path):
    argv = [str(tmp_path / "out") if a == "OUT_UNUSED" else a for a in argv]
    assert pipeline_cli.main(["--data-dir", str(tofu_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_missing_data_dir_is_one_line(tmp_path, capsys):
    assert pipeline_cli.main(["--data-dir", str(tmp_path)]) == 2
    assert "full.json" in capsys.readouterr().err


def test_dry_run_lists_runs(tofu_dir, capsys):
    assert pipeline_cli.main(["--data-dir", str(tofu_dir), "--dry-run", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {"forget50-npo_rt-rt5-s0", "forget90-npo_rt-rt12-s0"} <= {r["id"] for r in runs}



def test_clip_ablation_adds_unclipped_forget10_runs(tofu_dir, capsys):
    """--clip-ablation GA NPO with no main grid (--methods alone) and no other extras: exactly the
    two unclipped forget10 runs, tagged and keyed apart from the clipped ones."""
    argv = ["--data-dir", str(tofu_dir), "--dry-run", "--json", "--tasks", "forget10", "--methods",
            "--rt-ablation", "--npo-betas", "--clip-ablation", "GA", "NPO"]
    assert pipeline_cli.main(argv) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["tag"], r["max_grad_norm"]) for r in runs] == [
        ("forget10-ga-noclip-rt1-s0", "no_clip", 0.0), ("forget10-npo-noclip-rt1-s0", "no_clip", 0.0)]
    assert pipeline_cli.main(argv[:-2] + ["XX"]) == 2
    assert "unknown method 'XX'" in capsys.readouterr().err
    assert pipeline_cli.main(argv + ["--no-extras"]) == 0   # the ablation is an extra
    assert json.loads(capsys.readouterr().out) == []


# The same data and fine-tuning settings as benchmarks/gpu_tofu.py --quick, so that the two slow
# tests share their fine-tuned models through the content-hashed stages of one work folder.
MICRO = MICRO_PIPELINE   # tests/conftest.py


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline_work")


@pytest.mark.slow
def test_micro_pipeline_runs_a_non_grid_method_with_its_hp(tofu_dir, tmp_path, capsys):
    """--hp reaches a method outside the paper's grid: RMU at layer 1 of the 3-layer micro model
    (its default layer 7 does not exist there), recorded in the run's knobs and stage key."""
    out = tmp_path / "out"
    argv = ["--data-dir", str(tofu_dir), *MICRO, "--methods", "RMU", "--hp", "layer=1",
            "--out", str(out), "--work", str(tmp_path / "work")]  # not the module's: the next test
    # checks that its first run computes every stage
    assert pipeline_cli.main(argv) == 0
    (run,) = tofu_results.load_results(out)
    assert run.method == "RMU" and run.meta["knobs"]["layer"] == 1
    assert run.evals[-1]["step"] > 0


@pytest.mark.slow
def test_micro_pipeline_end_to_end_and_resume(tofu_dir, tmp_path, work, capsys):
    out = tmp_path / "out"
    argv = ["--data-dir", str(tofu_dir), *MICRO, "--out", str(out), "--work", str(work)]
    assert pipeline_cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "[skip]" not in first
    runs = tofu_results.load_results(out)
    assert sorted(r.method for r in runs) == ["GA", "NPO+RT"]
    for run in runs:
        # forget05 with 1 QA per author = 10 items, batch 4, 2 epochs: 2 x 10 // 4 = 5 steps, 2 per
        # "epoch" as llm.train.loop (and TOFU) count them, evaluated every 2 steps and at the end
        assert [row["step"] for row in run.evals] == [0, 2, 4, 5]
        assert [row["epoch"] for row in run.evals] == [0.0, 0.8, 1.6, 2.0]
        assert run.meta["steps_per_epoch"] == 2 and run.meta["n_forget"] == 10
        last = run.evals[-1]
        assert 0 <= last["summary"]["model_utility"] <= 1
        assert 0 <= last["summary"]["forget_quality"] <= 1
        assert last["kl"]["forget"] > 0 and last["kl"]["real_world"] >= 0
        assert {s["set"] for s in last["samples"]} == {"forget", "retain", "real_world"}
        assert run.evals[0]["summary"] == runs[0].evals[0]["summary"]   # shared step 0
    assert runs[0].evals[-1]["summary"] != runs[1].evals[-1]["summary"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and sorted(manifest["planned"]) == sorted(r.id for r in runs)
    assert manifest["retain"]["forget05"]["split"] == "retain90"   # the cpu preset shares it
    assert manifest["target"]["tokens_per_s"] > 0
    # the stages on disk: one folder per stage, named by its hash, each with its outputs
    ran = [line.split("[run ] ")[1].split(" ...")[0] for line in first.splitlines() if "[run ] " in line]
    assert {"data", "target", "retain90", "retain-eval-forget05", "initial-forget05"} <= set(ran)
    assert sorted(r for r in ran if r.startswith("run-")) == sorted(f"run-{r.meta['id']}" for r in runs)
    stage_dirs = {json.loads(m.read_text())["name"]: m.parent for m in work.glob("*/stage.json")}
    assert set(ran) <= set(stage_dirs)
    for name in ran:
        assert stage_dirs[name].name == f"{name}-{json.loads((stage_dirs[name] / 'stage.json').read_text())['hash']}"
    # the numbers agree with the per-item logs and the training logs they came from
    from llm.evaluate.logs import summarize
    retain_log = stage_dirs["retain-eval-forget05"] / "TOFU_EVAL.json"
    assert_close(manifest["retain"]["forget05"]["summary"], summarize(retain_log))
    for run in runs:
        stage = stage_dirs[f"run-{run.meta['id']}"]
        assert run.meta["stage"] == json.loads((stage / "stage.json").read_text())["hash"]
        full = [json.loads(r) for r in (stage / "run.jsonl").read_text().splitlines()]
        train = [r for r in full if r.get("event") == "train"]
        assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
        assert full[0]["method"] == run.method and not (stage / "model").exists()
        logged = [json.loads(r) for r in (out / "runs" / f"{run.meta['id']}.jsonl").read_text().splitlines()]
        assert [r.get("event") for r in logged] == [r.get("event") for r in full]
        for kept, raw in zip(logged[1:], full[1:]):   # the committed log: rounded, same numbers
            assert_close(kept.get("summary", kept.get("loss")), raw.get("summary", raw.get("loss")),
                         rel=1e-5)
    # a second call finds every stage done and rewrites identical logs
    before = {p.name: p.read_text() for p in (out / "runs").glob("*.jsonl")}
    markers = {p: p.read_text() for p in work.glob("*/stage.json")}
    assert pipeline_cli.main(argv) == 0
    second = capsys.readouterr().out
    skipped = [line.split("[skip] ")[1].split(" (")[0] for line in second.splitlines() if "[skip] " in line]
    assert "[run ]" not in second and sorted(skipped) == sorted(ran)
    assert {p.name: p.read_text() for p in (out / "runs").glob("*.jsonl")} == before
    assert {p: p.read_text() for p in work.glob("*/stage.json")} == markers


@pytest.mark.slow
def test_stopped_pipeline_leaves_a_folder_marked_incomplete(tofu_dir, tmp_path, work, monkeypatch, capsys):
    """Ctrl-C in the second planned run (GA's stages are cached in ``work`` by the test above):
    one line, exit 130, and a manifest with 1 of 2 runs that says so; the figures refuse it."""
    import llm.train.unlearning
    from figures import fig5_tofu_tradeoff as fig5
    plain = llm.train.unlearning.unlearn

    def unlearn(cfg, eval_fn=None):
        if cfg.method == "npo":
            raise KeyboardInterrupt
        return plain(cfg, eval_fn)
    monkeypatch.setattr(llm.train.unlearning, "unlearn", unlearn)
    out = tmp_path / "out"
    argv = ["--data-dir", str(tofu_dir), *MICRO, "--out", str(out), "--work", str(work)]
    argv[argv.index("NPO+RT")] = "NPO"   # planned: GA, then NPO
    assert pipeline_cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and [r["id"] for r in manifest["runs"]] == ["forget05-ga-rt1-s0"]
    assert manifest["planned"] == ["forget05-ga-rt1-s0", "forget05-npo-rt1-s0"]
    with pytest.raises(tofu_results.ResultsError, match="1 of 2 planned runs"):
        tofu_results.load_results(out)
    assert fig5.main(["--from-results", str(out), "--out", str(tmp_path / "figs")]) == 2
    assert "--allow-incomplete" in capsys.readouterr().err and not (tmp_path / "figs").exists()
    assert [r.method for r in tofu_results.load_results(out, allow_incomplete=True)] == ["GA"]


@pytest.mark.slow
def test_clip_ablation_trains_without_clipping(tofu_dir, tmp_path, work, monkeypatch):
    """The no_clip run reaches the trainer with max_grad_norm 0 (the main run keeps the default
    1.0), records it in its knobs, and reads back under its own label."""
    import llm.train.unlearning
    plain, seen = llm.train.unlearning.unlearn, []

    def unlearn(cfg, eval_fn=None):
        seen.append(cfg.max_grad_norm)
        return plain(cfg, eval_fn)
    monkeypatch.setattr(llm.train.unlearning, "unlearn", unlearn)
    out = tmp_path / "out"
    argv = ["--data-dir", str(tofu_dir), *MICRO, "--out", str(out), "--work", str(work)]
    argv = [a for a in argv if a not in ("--no-extras", "NPO+RT")]
    argv[argv.index("forget05")] = "forget10"
    assert pipeline_cli.main(argv + ["--rt-ablation", "--clip-ablation", "GA"]) == 0
    assert seen == [1.0, 0.0]
    runs = {tofu_results.label(r): r for r in tofu_results.load_results(out)}
    assert set(runs) == {"GA", "GA no clip"}
    assert runs["GA no clip"].knobs["max_grad_norm"] == 0.0 and "max_grad_norm" not in runs["GA"].knobs


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_with_quick(tofu_dir, tmp_path, work):
    import subprocess
    import sys
    out = tmp_path / "gpu" / "tofu_gpu"
    cmd = ["bash", str(pipeline_repo() / "benchmarks" / "gpu_tofu.sh"), "--quick", "--json", "--out", str(out),
           "--work", str(work), "--data-dir", str(tofu_dir), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["finetune_tokens_per_s"] > 0 and summary["flops_per_token"] > 0
    assert summary["mfu"] is None                      # no bf16 peak known for a CPU
    assert set(summary["methods"]) == {"GA", "GA+RT", "NPO", "NPO+RT"}
    assert summary["npo_over_ga_step_time"] > 0 and summary["eval_items_per_s"] > 0
    assert json.loads((tmp_path / "gpu" / "gpu_tofu_summary.json").read_text()) == summary
    leg = summary["fsdp_leg"]["rows"]  # 1-process FSDP2 vs plain, each with the planner's estimate
    assert set(leg) == {"ddp", "fsdp"} and all(r["measured_peak_bytes"] > 0 < r["planned_bytes"] for r in leg.values())
    assert len(tofu_results.load_results(out)) == 4


def pipeline_repo():
    from pathlib import Path

    import llm      # the package's root, not a module's: a module may sit in a subpackage
    return Path(llm.__file__).resolve().parents[1]
