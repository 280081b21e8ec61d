"""The output folder's lifecycle (llm/train/checkpoints.py): --resume only resumes what was started, and a
kill at any instant (SIGKILL in a subprocess, at a chosen point) leaves either a finished run or
one that --resume finishes bit-identically to an uninterrupted run; crashes and Ctrl-C likewise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, save_tiny_target
from llm.train import checkpoints, loop as train, unlearning
from llm.train.loop import TrainConfig
from llm.train.cli import unlearn_main
from llm.train.unlearning import unlearn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}

#: Runs ``python -m llm unlearn ARGS`` with a SIGKILL planted at POINT (argv[1]); no hook in the
#: product code: the driver wraps the functions the run calls.
DRIVER = r'''
import os, signal, sys
from pathlib import Path
import torch
from llm.train import checkpoints, loop as train, cli as train_cli

point, argv = sys.argv[1], sys.argv[2:]
main = int(os.environ.get("RANK", "0")) == 0
calls = {"n": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "step":                # mid-training: the first micro-batch of step 4
    real = train.micro_losses
    def micro_losses(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            die()
        return real(*a, **k)
    train.micro_losses = micro_losses
elif point == "checkpoint":        # inside checkpoint-4's save: weights and AdamW state written
    real_save = torch.save
    def save(obj, f, *a, **k):
        if Path(str(f)).name == "scheduler.pt" and "checkpoint-4" in str(f):
            die()
        return real_save(obj, f, *a, **k)
    torch.save = save
elif point == "final-model":       # final save: model.safetensors written, tokenizer not yet
    def save_tokenizer(*a, **k):
        if main:
            die()
    checkpoints.save_tokenizer = save_tokenizer
elif point == "finish":            # final model complete, before the rename
    def finish(out):
        die()
    checkpoints.finish = finish
elif point == "finish-swap":       # --overwrite: old <out> moved aside, <out>.partial not yet renamed
    real_replace = os.replace
    def replace(src, dst, *a, **k):
        if str(src).endswith(".partial"):
            die()
        return real_replace(src, dst, *a, **k)
    checkpoints.os.replace = replace
elif point == "cleanup":           # after the rename, before the checkpoints are removed
    real_rmtree = checkpoints.shutil.rmtree
    def rmtree(path, *a, **k):
        if Path(str(path)).name == "run.old":   # <out>.old (the test's --out is .../run)
            calls["n"] += 1
            if calls["n"] == 2:    # finish's second: the old result, once the new one is in place
                die()
        return real_rmtree(path, *a, **k)
    checkpoints.shutil.rmtree = rmtree
raise SystemExit(train_cli.unlearn_main(argv))
'''


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=2)


def _flags(target, tofu_dir, rc, out, **kw):
    """5 steps (20 forget items, effective batch 4, 2 micro-batches), checkpoints at steps 2 and 4."""
    flags = dict(model=target, data_dir=tofu_dir, forget="forget01", method="npo_rt", max_examples=20,
                 epochs=1, batch_size=2, effective_batch=4, lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                 save_every=2, ref_cache=rc, seed=0, device="cpu", out=out)
    flags.update(kw)
    argv = []
    for k, v in flags.items():
        if v is True:
            argv.append("--" + k.replace("_", "-"))
        elif v is not False and v is not None:
            argv += ["--" + k.replace("_", "-"), str(v)]
    return argv


def _cfg(argv) -> TrainConfig:
    parser = train.parser("unlearn", unlearning.OBJECTIVE.methods)
    return TrainConfig(**{k: v for k, v in vars(parser.parse_args(argv)).items() if k != "json"})


def _killed(point, argv, tmp, prefix=(sys.executable,)):
    driver = tmp / "kill_driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run([*prefix, str(driver), point, *argv], env=ENV, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode != 0, f"{point}: the run was not killed\n{done.stderr[-2000:]}"
    return done


def _one_line_error(capsys, *needles):
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith(("Loading weights", "Writing", "note: "))]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture(scope="module")
def reference(target, tofu_dir, tmp_path_factory):
    """The uninterrupted run every interrupted one must equal, byte for byte."""
    tmp = tmp_path_factory.mktemp("reference")
    out = unlearn(_cfg(_flags(target, tofu_dir, tmp / "rc", tmp / "full")))
    return {"model": (out / "model.safetensors").read_bytes(), "log": (out / "log.jsonl").read_text(),
            "rc": tmp / "rc"}


def _same_as_reference(out, reference):
    assert (out / "model.safetensors").read_bytes() == reference["model"]
    assert (out / "log.jsonl").read_text() == reference["log"]
    assert not list(out.glob("checkpoint-*")) and not (out / checkpoints.SETTINGS).exists()
    assert not checkpoints.work_dir(out).exists()


# ---- --resume compares settings -----------------------------------------------------------------

def test_resume_refuses_changed_settings_naming_each_and_allows_the_free_ones(target, tofu_dir, tmp_path,
                                                                                capsys, reference):
    out = tmp_path / "run"
    argv = _flags(target, tofu_dir, reference["rc"], out)
    assert unlearn_main(argv + ["--stop-after", "3"]) == 0   # checkpoint-2, 3 logged steps
    work = checkpoints.work_dir(out)
    before = {p.relative_to(work): p.read_bytes() for p in work.rglob("*") if p.is_file()}

    changed = _flags(target, tofu_dir, reference["rc"], out, lr=2e-3, method="ga")
    assert unlearn_main(changed + ["--resume"]) == 2
    line = _one_line_error(capsys, "was started with other settings", "--lr: 0.001 -> 0.002",
                           "--method: npo_rt -> ga", "--overwrite")
    assert "--save-every" not in line and "--out" not in line
    assert unlearn_main(_flags(target, tofu_dir, reference["rc"], out, max_examples=16) + ["--resume"]) == 2
    _one_line_error(capsys, "--max-examples: 20 -> 16")
    after = {p.relative_to(work): p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert after == before  # a refused resume touches nothing

    assert unlearn_main(argv) == 2
    _one_line_error(capsys, "holds an interrupted run", "--resume continues it from checkpoint-2")

    # save-every, stop-after, device auto (= cpu here) and the cache folder may differ
    free = _flags(target, tofu_dir, reference["rc"], out, save_every=1, device="auto")
    assert unlearn_main(free + ["--resume", "--stop-after", "4"]) == 0
    assert unlearn_main(free + ["--resume"]) == 0
    _same_as_reference(out, reference)


def test_resume_refuses_changed_data(target, tofu_dir, tmp_path, capsys, reference):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("full.json", "forget01.json"):
        (data / name).write_text((tofu_dir / name).read_text())
    argv = _flags(target, data, reference["rc"], tmp_path / "run", max_examples=None)
    assert unlearn_main(argv + ["--stop-after", "2"]) == 0
    rows = (data / "forget01.json").read_text().splitlines()
    (data / "forget01.json").write_text("\n".join(rows[:-4]) + "\n")   # same flags, fewer items
    assert unlearn_main(argv + ["--resume"]) == 2
    _one_line_error(capsys, "the data changed since", "n: ")


# ---- kills at chosen instants --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point", ["step", "checkpoint", "final-model", "finish"])
def test_kill_then_resume_is_bit_identical(point, target, tofu_dir, tmp_path, capsys, reference):
    out = tmp_path / "run"
    argv = _flags(target, tofu_dir, reference["rc"], out)
    _killed(point, argv, tmp_path)
    work = checkpoints.work_dir(out)
    assert not out.exists() and work.exists()
    if point == "checkpoint":
        assert (work / ".checkpoint-4.tmp").exists() and checkpoints.latest(work).name == "checkpoint-2"
    assert unlearn_main(argv) == 2        # a plain rerun says what the folder allows
    advice = {"step": "from checkpoint-2", "checkpoint": "from checkpoint-2",
              "final-model": "from checkpoint-4", "finish": "final model is complete"}[point]
    _one_line_error(capsys, "holds an interrupted run", advice)
    assert unlearn_main(argv + ["--resume"]) == 0
    _same_as_reference(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["finish-swap", "cleanup"])
def test_kill_while_overwriting_leaves_a_run_to_finish_or_a_finished_one(point, target, tofu_dir, tmp_path,
                                                                          capsys, reference):
    out = tmp_path / "run"
    argv = _flags(target, tofu_dir, reference["rc"], out)
    assert unlearn_main(_flags(target, tofu_dir, reference["rc"], out, lr=2e-3)) == 0   # an older result
    _killed(point, argv + ["--overwrite"], tmp_path)
    if point == "finish-swap":   # the old result moved aside, the new one complete: --resume renames it
        assert not out.exists() and out.with_name("run.old").exists()
        assert unlearn_main(argv + ["--resume"]) == 0
    else:                        # renamed: a finished run (with its checkpoints not yet removed)
        assert (out / "model.safetensors").read_bytes() == reference["model"]
        assert out.with_name("run.old").exists() and list(out.glob("checkpoint-*"))
        assert unlearn_main(argv) == 2
        _one_line_error(capsys, "exists; pass --overwrite")
        assert unlearn_main(argv + ["--overwrite"]) == 0
    _same_as_reference(out, reference)
    assert not out.with_name("run.old").exists()


# ---- crashes and Ctrl-C in a step ------------------------------------------------------------------

@pytest.mark.parametrize("error,code,message", [
    (KeyboardInterrupt, 130, "interrupted: "),
    (RuntimeError("CUDA out of memory (simulated)"), 1, "training stopped: RuntimeError: CUDA out of memory"),
])
def test_crash_or_ctrl_c_in_a_step_leaves_a_resumable_folder(error, code, message, target, tofu_dir, tmp_path,
                                                              capsys, monkeypatch, reference):
    out = tmp_path / "run"
    argv = _flags(target, tofu_dir, reference["rc"], out)
    real, calls = train.micro_losses, []

    def micro_losses(*a, **k):
        calls.append(1)
        if len(calls) == 7:   # step 4: checkpoint-2 exists
            raise error
        return real(*a, **k)

    monkeypatch.setattr(train, "micro_losses", micro_losses)
    assert unlearn_main(argv) == code
    _one_line_error(capsys, message, "--resume continues it from checkpoint-2", "--overwrite starts over")
    monkeypatch.setattr(train, "micro_losses", real)
    assert unlearn_main(argv + ["--resume"]) == 0
    _same_as_reference(out, reference)


def test_non_finite_loss_stops_in_one_line_and_overwrite_starts_over(target, tofu_dir, tmp_path, capsys,
                                                                     reference):
    out = tmp_path / "run"
    assert unlearn_main(_flags(target, tofu_dir, reference["rc"], out, lr=1e30, save_every=0)) == 1
    _one_line_error(capsys, "training stopped: FloatingPointError: the loss became", "lower --lr",
                    "no checkpoint to resume", "--overwrite starts over")
    argv = _flags(target, tofu_dir, reference["rc"], out)
    assert unlearn_main(argv + ["--resume"]) == 2
    _one_line_error(capsys, "no checkpoint to resume", "--overwrite")
    assert unlearn_main(argv + ["--overwrite"]) == 0
    _same_as_reference(out, reference)


# ---- the same under --strategy fsdp (sharded checkpoints, final model gathered on rank 0) ----------

@pytest.mark.slow
def test_fsdp_kill_during_final_save_then_resume_is_bit_identical(target, tofu_dir, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # 4 steps, sharded checkpoints at 1, 2, 3. The reference cache is filled first in one process:
    # on main, an fsdp run that computes it leaves the root's parameters unsharded, so its
    # optimizer holds stale tensors and no sharded checkpoint can be written (issue 19, item 1)
    base = _flags(target, tofu_dir, tmp_path / "rc", None, max_examples=8, epochs=2, save_every=1)
    unlearning.prepare_run(_cfg(base))
    base += ["--strategy", "fsdp"]

    def launch(out, *extra):
        done = subprocess.run([*torchrun, "-m", "llm", "unlearn", *base, "--out", str(out), *extra],
                              env=ENV, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(tmp_path / "full")
    _killed("final-model", [*base, "--out", str(tmp_path / "killed")], tmp_path, prefix=(*torchrun,))
    work = checkpoints.work_dir(tmp_path / "killed")
    assert checkpoints.latest(work).name == "checkpoint-3"
    assert (checkpoints.latest(work) / "sharded" / ".metadata").exists()
    launch(tmp_path / "killed", "--resume")
    for name in ("model.safetensors", "log.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    assert not work.exists()
