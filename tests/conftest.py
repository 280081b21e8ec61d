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


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures saved during a test, in order: tests read the data a figure drew
    (lines, points) from them instead of trusting a file size."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        if not any(f is self for f in figures):
            figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return figures


def labelled_lines(ax) -> dict:
    """{label: Line2D} of an axes' lines that carry a legend label."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
