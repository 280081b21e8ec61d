"""FSDP2 (--strategy fsdp): 2 gloo processes equal 1 process, resume is bit-identical, accelerate works.

Each multi-process run is a real launch (torchrun / accelerate launch) of ``python -m llm unlearn``
on the tiny preset; they share one module-scoped set of runs to keep the suite fast.
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
from llm.config import ConfigError, TrainConfig, resolve
from llm.train_cli import unlearn_main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _common(target, tofu_dir, rc, method="npo_rt"):
    return ["unlearn", "--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
            "--method", method, "--max-examples", "8", "--epochs", "2", "--batch-size", "2",
            "--effective-batch", "4", "--lr", "1e-3", "--ref-cache", str(rc), "--device", "cpu"]


def _launch(prefix, args):
    done = subprocess.run([*prefix, "-m", "llm", *args], env=ENV, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _log(path: Path) -> list[dict]:
    return [json.loads(r) for r in (path / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tofu_dir, tmp_path_factory):
    """one: 1 process (plain); two: 2 processes fsdp + gradient checkpointing; resumed: the same
    fsdp run stopped after 2 of 4 steps (sharded checkpoint every step) and resumed."""
    tmp = tmp_path_factory.mktemp("fsdp")
    target = save_tiny_target(tofu_dir, tmp / "target", seed=4)
    common = _common(target, tofu_dir, tmp / "rc")
    assert unlearn_main([*common[1:], "--out", str(tmp / "one")]) == 0   # in-process: no launch cost
    fsdp = [*common, "--strategy", "fsdp", "--gradient-checkpointing", "--save-every", "1"]
    _launch(TORCHRUN, [*fsdp, "--out", str(tmp / "two")])
    _launch(TORCHRUN, [*fsdp, "--out", str(tmp / "resumed"), "--stop-after", "2"])
    partial = tmp / "resumed.partial"
    assert [p.name for p in partial.glob("checkpoint-*")] == ["checkpoint-2"]
    assert (partial / "checkpoint-2" / "sharded" / ".metadata").exists()  # torch.distributed.checkpoint
    _launch(TORCHRUN, [*fsdp, "--out", str(tmp / "resumed"), "--resume"])
    return {"tmp": tmp, "target": target, "common": common}


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process(runs):
    tmp = runs["tmp"]
    one, two = (json.loads((tmp / d / "train_config.json").read_text()) for d in ("one", "two"))
    assert (one["strategy"], one["processes"], one["grad_accum"]) == ("ddp", 1, 2)
    assert (two["strategy"], two["processes"], two["grad_accum"]) == ("fsdp", 2, 1)
    logs = [_log(tmp / d) for d in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs):
        assert a["lr"] == b["lr"]
        for k in ("loss", "forget_loss", "retain_loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-5), k
        # the norm sums ~1M squared fp32 gradients in a different order once sharded: ~1e-5 apart
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=5e-5)
    wa, wb = _weights(tmp / "one"), _weights(tmp / "two")
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    initial = _weights(runs["target"])
    assert all(not torch.equal(wa[k], initial[k]) for k in wa if k.endswith("proj.weight"))  # it trained


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
def test_accelerate_launch_with_shipped_fsdp_config_and_live_reference(runs, tofu_dir):
    """accelerate's FSDP config selects --strategy fsdp; npo_kl's live reference is a second sharded
    copy; the result equals one plain process."""
    tmp = runs["tmp"]
    common = _common(runs["target"], tofu_dir, tmp / "rc", method="npo_kl")
    assert unlearn_main([*common[1:], "--out", str(tmp / "kl-one")]) == 0
    if shutil.which("accelerate") is None:
        pytest.fail("accelerate is a declared dependency (pip install -e .[llm])")
    _launch(["accelerate", "launch", "--config_file", str(REPO / "configs" / "fsdp.yaml"),
             "--num_processes", "2", "--mixed_precision", "no"], [*common, "--out", str(tmp / "kl-acc")])
    cfg = json.loads((tmp / "kl-acc" / "train_config.json").read_text())
    assert (cfg["strategy"], cfg["processes"]) == ("fsdp", 2)
    for a, b in zip(_log(tmp / "kl-one"), _log(tmp / "kl-acc"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    wa, wb = _weights(tmp / "kl-one"), _weights(tmp / "kl-acc")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)


def test_fsdp_without_a_launcher_says_how_to_launch(monkeypatch, capsys, tmp_path):
    for var in ("WORLD_SIZE", "MASTER_ADDR", "RANK", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(var, raising=False)
    code = unlearn_main(["--strategy", "fsdp", "--forget", "forget01", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "torchrun --nproc-per-node" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_pipeline_fsdp_without_a_launcher_says_how_to_launch(monkeypatch, capsys, tmp_path, tofu_dir):
    from llm.pipeline_cli import main
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
    _launch(TORCHRUN, args)
    for stage in ("target-*", "retain90-*"):
        cfg = json.loads(next((tmp_path / "work").glob(f"{stage}/model/train_config.json")).read_text())
        assert (cfg["strategy"], cfg["processes"]) == ("fsdp", 2)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["id"] for r in manifest["runs"]] == ["forget10-npo_rt-rt1-s0"]
    rows = [json.loads(r) for r in (tmp_path / "out" / manifest["runs"][0]["log"]).read_text().splitlines()]
    evals = [r["step"] for r in rows if r.get("event") == "eval"]
    assert evals == [0, 1, 2]   # initial + once per epoch (1 step each), logged once (by rank 0)
    assert sum("loss" in r for r in rows) == 2


def test_ranked_stages_hash_the_stage_code_not_the_rank0_wrapper(monkeypatch, tmp_path):
    """On rank 0 the stage function runs wrapped (to announce it); the stage's hash must still be
    that of the stage's own code, as in a single process, so launched and plain runs share stages."""
    from infra.stages import Stages
    from llm import distributed

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
