"""Test-wide settings: no network, no GUI, deterministic torch, the shared TOFU copy located once."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_TOFU = REPO.parent / "shared" / "tofu"


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    """The TOFU copy beside the checkout (CI lays ../shared next to the clone)."""
    if not (SHARED_TOFU / "full.json").exists():
        pytest.fail(f"TOFU data not found at {SHARED_TOFU}; CI must provide ../shared/tofu")
    return SHARED_TOFU


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and 2 threads thrash when the cores are shared.

    Use per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def save_tiny_target(tofu_dir: Path, path: Path, seed: int) -> Path:
    """Save a freshly initialised ``tiny`` preset (model + tokenizer) as a stand-in target model."""
    from llm.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
