"""FSDP2 (--strategy fsdp): 2 gloo processes equal 1 process, resume is bit-identical, accelerate works.

Each multi-process run is a real launch (torchrun / accelerate launch) of ``python -m llm unlearn``
(or of tests/fsdp_matrix.py, which calls the same entry point for several configurations) on the
tiny preset; they share module-scoped runs to keep the suite fast. Every launched run that needs
reference log-probs gets a reference cache of its own, so it computes them on the sharded model:
a cache filled by the one-process run hid a bug there (issue 19, see ``distributed.reshard``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, save_tiny_target
from llm.train.config import ConfigError, TrainConfig, resolve
from llm.train.cli import unlearn_main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# (method, activation checkpointing, --max-grad-norm): every (method, checkpointing) pair with the
# recipe's clip 1.0, and clipping off for npo_rt and npo_kl (see test_fsdp_matrix_matches_one_process)
MATRIX = [(method, ckpt, "1.0") for method in ("npo_rt", "ga", "npo_kl") for ckpt in (False, True)] + \
    [("npo_rt", False, "0"), ("npo_kl", True, "0")]
DEFAULT = ("npo_rt", False, "1.0")  # what a user gets: the cached reference, clipping, no checkpointing


def _common(target, tofu_dir, rc, method="npo_rt"):
    return ["unlearn", "--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
            "--method", method, "--max-examples", "8", "--epochs", "2", "--batch-size", "2",
            "--effective-batch", "4", "--lr", "1e-3", "--ref-cache", str(rc), "--device", "cpu"]


def _variant(target, tofu_dir, rc, method, ckpt, clip):
    return [*_common(target, tofu_dir, rc, method), "--max-grad-norm", clip,
            *(["--gradient-checkpointing"] if ckpt else [])]


def _launch(prefix, args):
    done = subprocess.run([*prefix, *args], env=ENV, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _log(path: Path) -> list[dict]:
    return [json.loads(r) for r in (path / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


def _assert_same_run(one: Path, two: Path) -> None:
    """Every logged loss and grad norm to 1e-5 (relative), the final weights to 1e-4."""
    logs = [_log(one), _log(two)]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs):
        assert a["lr"] == b["lr"]
        for k in ("loss", "forget_loss", "retain_loss", "grad_norm"):
            assert b[k] == pytest.approx(a[k], rel=1e-5), (two.name, a["step"], k)
    wa, wb = _weights(one), _weights(two)
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{two.name} {k}: {m}")


@pytest.fixture(scope="module")
def runs(tofu_dir, tmp_path_factory):
    """one: 1 process (plain); two: 2 processes fsdp, the default recipe (clipping at 1.0, no
    activation checkpointing); resumed: the same fsdp run with a sharded checkpoint every step,
    stopped after 2 of 4 steps and resumed."""
    tmp = tmp_path_factory.mktemp("fsdp")
    target = save_tiny_target(tofu_dir, tmp / "target", seed=4)
    common = _common(target, tofu_dir, tmp / "rc")
    assert unlearn_main([*common[1:], "--out", str(tmp / "one")]) == 0   # in-process: no launch cost
    fsdp = [*_common(target, tofu_dir, tmp / "rc-two"), "--strategy", "fsdp"]
    _launch(TORCHRUN, ["-m", "llm", *fsdp, "--out", str(tmp / "two")])
    assert list((tmp / "rc-two").glob("refcache-*.npz"))   # the reference pass ran on the shards
    fsdp = [*_common(target, tofu_dir, tmp / "rc-resumed"), "--strategy", "fsdp", "--save-every", "1"]
    _launch(TORCHRUN, ["-m", "llm", *fsdp, "--out", str(tmp / "resumed"), "--stop-after", "2"])
    partial = tmp / "resumed.partial"
    assert [p.name for p in partial.glob("checkpoint-*")] == ["checkpoint-2"]
    assert (partial / "checkpoint-2" / "sharded" / ".metadata").exists()  # torch.distributed.checkpoint
    _launch(TORCHRUN, ["-m", "llm", *fsdp, "--out", str(tmp / "resumed"), "--resume"])
    return {"tmp": tmp, "target": target, "common": common}


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process(runs):
    """The default path a user gets (the paper's clip 1.0, cached reference, no checkpointing)."""
    tmp = runs["tmp"]
    one, two = (json.loads((tmp / d / "train_config.json").read_text()) for d in ("one", "two"))
    assert (one["strategy"], one["processes"], one["grad_accum"]) == ("ddp", 1, 2)
    assert (two["strategy"], two["processes"], two["grad_accum"]) == ("fsdp", 2, 1)
    assert (two["max_grad_norm"], two["gradient_checkpointing"]) == (1.0, False)
    assert max(r["grad_norm"] for r in _log(tmp / "one")) > 1.0   # so the clip scaled the updates
    _assert_same_run(tmp / "one", tmp / "two")
    wb, initial = _weights(tmp / "two"), _weights(runs["target"])
    assert all(not torch.equal(wb[k], initial[k]) for k in wb)   # it trained, embeddings and head too


@pytest.mark.slow
def test_fsdp_matrix_matches_one_process(runs, tofu_dir):
    """{npo_rt with the cached reference, ga, npo_kl with the live reference} x {activation
    checkpointing off, on} x {clip 1.0, off}, covered by 8 of its 12 cells: all six (method,
    checkpointing) pairs with the recipe's clip 1.0, plus clipping off for npo_rt (no checkpointing)
    and npo_kl (checkpointing); each 2 gloo processes vs 1 process at the same effective batch.
    The default cell (npo_rt, no checkpointing, clip 1.0) is ``two`` above, a launch of ``python -m
    llm unlearn``; the other 7 run one after another in a single torchrun launch of
    tests/fsdp_matrix.py (same entry point, one launch's cost), each with a fresh reference cache.
    The baseline of a cell is the plain one-process run of its method and clip, in this process
    (checkpointing only recomputes activations: the 2-process run must match it either way)."""
    tmp, target = runs["tmp"], runs["target"]
    batch, baselines = [], {("npo_rt", "1.0"): tmp / "one"}
    for method, ckpt, clip in MATRIX:
        if (method, clip) not in baselines:
            baselines[(method, clip)] = tmp / f"{method}-clip{clip}-one"
            assert unlearn_main([*_variant(target, tofu_dir, tmp / "rc", method, False, clip)[1:],
                                 "--out", str(baselines[(method, clip)])]) == 0
        if (method, ckpt, clip) != DEFAULT:
            name = f"{method}-{'ckpt' if ckpt else 'nockpt'}-clip{clip}-two"
            batch.append([*_variant(target, tofu_dir, tmp / f"rc-{name}", method, ckpt, clip)[1:],
                          "--strategy", "fsdp", "--out", str(tmp / name)])
    (tmp / "matrix.json").write_text(json.dumps(batch))
    _launch(TORCHRUN, [str(REPO / "tests" / "fsdp_matrix.py"), str(tmp / "matrix.json")])
    for method, ckpt, clip in MATRIX:
        two = tmp / ("two" if (method, ckpt, clip) == DEFAULT
                     else f"{method}-{'ckpt' if ckpt else 'nockpt'}-clip{clip}-two")
        cfg = json.loads((two / "train_config.json").read_text())
        assert (cfg["method"], cfg["gradient_checkpointing"], cfg["max_grad_norm"]) == (method, ckpt, float(clip))
        assert (cfg["strategy"], cfg["processes"]) == ("fsdp", 2)
        _assert_same_run(baselines[(method, clip)], two)
    assert {m for m, _, _ in MATRIX} == {"npo_rt", "ga", "npo_kl"} and len(set(MATRIX)) == 8


@pytest.mark.slow
def test_fsdp_output_is_one_consolidated_hf_folder(runs):
    from llm.models import load_model_and_tokenizer
    out = runs["tmp"] / "two"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("checkpoint-*"))
    model, tok = load_model_and_tokenizer(str(out))
    state = model.state_dict()
    for k, v in _weights(out).items():
        assert torch.equal(state[k], v)
    assert tok.eos_token_id is not None


@pytest.mark.slow
def test_fsdp_resume_is_bit_identical(runs):
    tmp = runs["tmp"]
    assert (tmp / "resumed" / "model.safetensors").read_bytes() == (tmp / "two" / "model.safetensors").read_bytes()
    assert (tmp / "resumed" / "log.jsonl").read_text() == (tmp / "two" / "log.jsonl").read_text()


@pytest.mark.slow
def test_accelerate_launch_with_shipped_fsdp_config_matches_one_process(runs, tofu_dir):
    """accelerate's FSDP config selects --strategy fsdp (the only difference from torchrun: the
    environment accelerate sets); on the default path (clip 1.0, cached reference computed in
    this launch, no checkpointing) the result equals one plain process. npo_kl's live reference
    under FSDP is in the matrix above."""
    tmp = runs["tmp"]
    if shutil.which("accelerate") is None:
        pytest.fail("accelerate is a declared dependency (pip install -e .[llm])")
    _launch(["accelerate", "launch", "--config_file", str(REPO / "configs" / "fsdp.yaml"),
             "--num_processes", "2", "--mixed_precision", "no", "-m", "llm"],
            [*_common(runs["target"], tofu_dir, tmp / "rc-acc"), "--out", str(tmp / "acc")])
    cfg = json.loads((tmp / "acc" / "train_config.json").read_text())
    assert (cfg["strategy"], cfg["processes"], cfg["max_grad_norm"]) == ("fsdp", 2, 1.0)
    assert list((tmp / "rc-acc").glob("refcache-*.npz"))
    _assert_same_run(tmp / "one", tmp / "acc")


def test_fsdp_without_a_launcher_says_how_to_launch(monkeypatch, capsys, tmp_path):
    for var in ("WORLD_SIZE", "MASTER_ADDR", "RANK", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(var, raising=False)
    code = unlearn_main(["--strategy", "fsdp", "--forget", "forget01", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "torchrun --nproc-per-node" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_pipeline_fsdp_without_a_launcher_says_how_to_launch(monkeypatch, capsys, tmp_path, tofu_dir):
    from llm.pipeline.cli import main
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main(["--preset", "cpu", "--data-dir", str(tofu_dir), "--strategy", "fsdp",
                 "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "torchrun --nproc-per-node N -m llm pipeline" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_strategy_flags_are_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with pytest.raises(ConfigError, match="--lora is not supported with --strategy fsdp"):
        resolve(TrainConfig(strategy="fsdp", lora=True), "unlearn", 2)
    with pytest.raises(ConfigError, match="ddp or fsdp"):
        resolve(TrainConfig(strategy="zero3"), "unlearn", 2)
    with pytest.raises(ConfigError, match="--cpu-offload needs --strategy fsdp"):
        resolve(TrainConfig(cpu_offload=True), "unlearn", 2)
    assert resolve(TrainConfig(), "unlearn", 2).strategy == "ddp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets for configs/fsdp.yaml
    assert resolve(TrainConfig(), "unlearn", 2).strategy == "fsdp"


@pytest.mark.slow
def test_paper_preset_pipeline_shards_when_launched_on_two_processes(tofu_dir, tmp_path):
    """The README's 2-GPU launch line, micro-sized on CPU: --preset paper picks fsdp by itself."""
    args = ["pipeline", "--preset", "paper", "--model", "tiny", "--data-dir", str(tofu_dir), "--tasks",
            "forget10", "--methods", "NPO+RT", "--seeds", "1", "--ft-epochs", "1", "--unlearn-epochs", "2",
            "--no-extras", "--ds-size", "4", "--qa-per-author", "2", "--max-new-tokens", "8", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    _launch(TORCHRUN, ["-m", "llm", *args])
    for stage in ("target-*", "retain90-*"):
        cfg = json.loads(next((tmp_path / "work").glob(f"{stage}/model/train_config.json")).read_text())
        assert (cfg["strategy"], cfg["processes"]) == ("fsdp", 2)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["id"] for r in manifest["runs"]] == ["forget10-npo_rt-rt1-s0"]
    rows = [json.loads(r) for r in (tmp_path / "out" / manifest["runs"][0]["log"]).read_text().splitlines()]
    evals = [r["step"] for r in rows if r.get("event") == "eval"]
    assert evals == [0, 1, 2]   # initial + once per epoch (1 step each), logged once (by rank 0)
    assert sum("loss" in r for r in rows) == 2


@pytest.mark.slow
def test_ddp_keeps_rank0s_best_fq_model(tofu_dir, tmp_path):
    """The pipeline's --attacks under ddp (fsdp is refused: tests/test_llm_attacks.py): only rank 0
    evaluates, so only rank 0 keeps the best-FQ model, and what it kept is the model of the
    earliest best step (tests/ddp_best_fq.py scripts Forget Quality 0.1, 0.3, 0.9, 0.9, 0.2)."""
    from transformers import AutoModelForCausalLM
    target = save_tiny_target(tofu_dir, tmp_path / "target", seed=4)
    out = tmp_path / "out"
    out.mkdir()
    _launch(TORCHRUN, [str(REPO / "tests" / "ddp_best_fq.py"), str(target), str(tofu_dir), str(out)])
    assert json.loads((out / "model" / "train_config.json").read_text())["processes"] == 2
    assert json.loads((out / "best.json").read_text()) == {"step": 2, "epoch": 1.0, "forget_quality": 0.9,
                                                          "model": "best_fq"}
    assert sorted(p.name for p in out.glob("seen-*")) == [f"seen-0-{s}.pt" for s in range(5)]
    kept = AutoModelForCausalLM.from_pretrained(out / "best_fq").state_dict()
    seen = {s: torch.load(out / f"seen-0-{s}.pt") for s in (2, 3)}
    assert kept and all(torch.equal(v, seen[2][k]) for k, v in kept.items())
    assert not all(torch.equal(v, seen[3][k]) for k, v in kept.items())
    assert not list(out.glob(".best_fq*"))


def test_ranked_stages_hash_the_stage_code_not_the_rank0_wrapper(monkeypatch, tmp_path):
    """On rank 0 the stage function runs wrapped (to announce it); the stage's hash must still be
    that of the stage's own code, as in a single process, so launched and plain runs share stages."""
    from infra.stages import Stages
    from llm.train import distributed

    def produce(path):
        (path / "out.txt").write_text("x")
        return {"n": 1}

    plain = Stages(tmp_path / "plain").run("s", {"k": 1}, [], produce)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    sent = []
    monkeypatch.setattr(distributed, "_broadcast", lambda obj=None: sent.append(obj))
    ranked = distributed.RankedStages(Stages(tmp_path / "ranked")).run("s", {"k": 1}, [], produce,
                                                                       collective=True)
    assert ranked["hash"] == plain["hash"] and (ranked["path"] / "out.txt").read_text() == "x"
    assert [m[0] for m in sent] == ["run", "done"]


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1e6])
def test_clip_grad_norm_is_torchs_clip_with_a_float64_norm(max_norm):
    """One process: the same norm as torch.nn.utils.clip_grad_norm_ (to float32's error, which is
    what float64 removes) and the same clipped gradients; 0 (off) and a large bound leave them."""
    from llm.train.distributed import clip_grad_norm
    gen = torch.Generator().manual_seed(0)
    shapes = [(300, 70), (70,), (5, 7, 3)]
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes] + [torch.nn.Parameter(torch.zeros(2))]
    for p in params[:-1]:   # the last has no gradient and counts as zero
        p.grad = torch.randn(p.shape, generator=gen) * 3
    before = [p.grad.clone() for p in params[:-1]]
    exact = sum((g.double() ** 2).sum() for g in before).sqrt().item()
    norm = clip_grad_norm(params, max_norm)
    assert norm == pytest.approx(exact, rel=1e-12)
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for r, g in zip(ref, before):
        r.grad = g.clone()
    assert float(torch.nn.utils.clip_grad_norm_(ref, max_norm if max_norm > 0 else float("inf"))) == \
        pytest.approx(norm, rel=1e-5)
    for p, r, g in zip(params, ref, before):
        torch.testing.assert_close(p.grad, r.grad if max_norm > 0 else g, rtol=1e-5, atol=0)
    if max_norm == 1.0:
        assert sum((p.grad.double() ** 2).sum() for p in params[:-1]).sqrt().item() == pytest.approx(1.0, rel=1e-5)
    else:
        assert all(torch.equal(p.grad, g) for p, g in zip(params, before))
