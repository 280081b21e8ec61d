"""What a new user meets with no TOFU folder: the hub cache found with no flag, one-line dead ends.

Each test runs ``python -m llm`` in a subprocess with its own environment (huggingface_hub reads
HF_HUB_CACHE and HF_HUB_OFFLINE when imported, so this process's settings cannot be changed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tofu_fixture import hub_layout_cache

REPO = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TOFU_DATA_DIR", "HF_HUB_OFFLINE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **extra)
    return env


def _llm(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "llm", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.strip()]


@pytest.mark.slow
def test_unlearn_and_eval_read_the_hub_cache_with_no_data_dir(tofu_dir, tmp_path):
    cache = hub_layout_cache(tofu_dir, tmp_path / "hf")
    env = _env(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "X"
    proc = _llm(["unlearn", "--model", "tiny", "--forget", "forget01", "--method", "npo_rt",
                 "--max-examples", "8", "--epochs", "1", "--out", out, "--ref-cache", tmp_path / "rc"],
                env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["data_dir"] is None
    proc = _llm(["eval", "--model", out, "--forget", "forget01", "--ds-size", "2", "--max-new-tokens", "2",
                 "--device", "cpu", "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert 0.0 <= summary["model_utility"] <= 1.0 and summary["forget_quality"] is None
    assert "--retain-logs" in proc.stderr   # how to get Forget Quality


@pytest.mark.slow
def test_no_data_anywhere_exits_2_with_one_line_and_writes_nothing(tmp_path):
    env = _env(HF_HUB_CACHE=str(tmp_path / "empty_cache"), HF_HUB_OFFLINE="1")
    proc = _llm(["unlearn", "--model", "tiny", "--forget", "forget01", "--out", tmp_path / "X",
                 "--ref-cache", tmp_path / "rc"], env, tmp_path)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in ("--data-dir", "TOFU_DATA_DIR", "hf download locuslab/TOFU --repo-type dataset"):
        assert needle in lines[0]
    assert {p.name for p in tmp_path.iterdir()} <= {"empty_cache"}   # no X, X.partial, rc, runs


@pytest.mark.slow
def test_a_mistyped_local_model_folder_never_reaches_the_hub(tofu_dir, tmp_path):
    (tmp_path / "runs").mkdir()
    # HF_HUB_OFFLINE unset and a proxy nobody listens on: any hub request would fail (after retries)
    env = _env(HF_HUB_CACHE=str(tmp_path / "cache"), HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", TOFU_DATA_DIR=str(tofu_dir))
    proc = _llm(["unlearn", "--model", "runs/missing", "--forget", "forget01", "--out", tmp_path / "X"],
                env, tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "runs/missing" in lines[0] and "not found" in lines[0], lines
    assert not (tmp_path / "X").exists() and not (tmp_path / "cache").exists()
