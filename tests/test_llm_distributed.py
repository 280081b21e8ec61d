"""Data parallel training: the data plan is process-count independent; 2 gloo processes == 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from llm.models import load_model_and_tokenizer
from llm.train.loop import DataOrder


def test_plan_slices_are_the_same_global_batch_for_any_process_count():
    plan = DataOrder(n=40, n_retain=100, n_idk=10, effective_batch=8, steps=10, steps_per_epoch=5,
                warmup=5, seed=3)
    for step in (0, 4, 5, 9):  # 5 crosses into epoch 1
        one = [it for micro in plan.items(step, 0, 1, 2, 4) for it in micro]
        two = [it for rank in (0, 1) for micro in plan.items(step, rank, 2, 2, 2) for it in micro]
        four = [it for rank in range(4) for micro in plan.items(step, rank, 4, 2, 1) for it in micro]
        assert one == two == four and len(one) == 8
    r0 = [it for m in plan.items(0, 0, 2, 2, 2) for it in m]
    r1 = [it for m in plan.items(0, 1, 2, 2, 2) for it in m]
    assert not {i for i, *_ in r0} & {i for i, *_ in r1}          # different forget items
    assert [r for _, r, _, _ in r0] != [r for _, r, _, _ in r1]    # hence different retain draws
    epoch0 = sorted(it[0] for s in range(5) for m in plan.items(s, 0, 1, 8, 1) for it in m)
    assert epoch0 == list(range(40))  # each epoch visits every forget item once


@pytest.mark.slow
def test_two_gloo_processes_match_one(tofu_dir, tmp_path):
    target = tmp_path / "target"
    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=4)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    common = ["unlearn", "--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
              "--method", "npo_rt", "--max-examples", "8", "--epochs", "2", "--batch-size", "2",
              "--effective-batch", "4", "--lr", "1e-3", "--ref-cache", str(tmp_path / "rc"),
              "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    single = subprocess.run([sys.executable, "-m", "llm", *common, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", "-m", "llm", *common, "--out", str(tmp_path / "two")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = (json.loads((tmp_path / d / "train_config.json").read_text()) for d in ("one", "two"))
    assert (one["processes"], one["grad_accum"]) == (1, 2) and (two["processes"], two["grad_accum"]) == (2, 1)
    logs = [[json.loads(r) for r in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs):
        assert a["lr"] == b["lr"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    from safetensors.torch import load_file
    wa, wb = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(wa[k], model.state_dict()[k]) for k in wa)  # it did train
