"""Test-wide settings: no network, no GUI, deterministic torch, and TOFU data.

``tofu_dir``: a TOFU-shaped fixture our own generator writes once per session (tests/tofu_fixture.py);
every test of a code path uses it, so the suite needs nothing beside the checkout.
``real_tofu_dir``: the real TOFU files from ``$TOFU_DATA_DIR``, for the few tests whose point is the
real data (split sizes, the published eval log); they skip, saying so, when it is unset.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tofu_fixture import write_fixture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tofu_dir(tmp_path_factory) -> Path:
    """The generated TOFU-shaped fixture (200 fictitious authors x 20 QA), built once per session."""
    return write_fixture(tmp_path_factory.mktemp("tofu_fixture"))


def real_tofu(why: str = "checks the real TOFU files") -> Path:
    """The real TOFU folder from $TOFU_DATA_DIR; skips, saying ``why`` the test needs it, when unset."""
    value = os.environ.get("TOFU_DATA_DIR")
    if not value:
        pytest.skip(f"TOFU_DATA_DIR unset: this test {why} (CI sets it; locally: "
                    f"hf download locuslab/TOFU --repo-type dataset, then point TOFU_DATA_DIR at it)")
    path = Path(value).expanduser()
    if not (path / "full.json").exists():
        pytest.fail(f"TOFU_DATA_DIR={value} has no full.json; point it at a TOFU folder")
    return path


@pytest.fixture(scope="session")
def real_tofu_dir() -> Path:
    """The real TOFU files, from $TOFU_DATA_DIR; the test skips, saying why, when it is unset."""
    return real_tofu()


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
    """{label: Line2D} of an axes' lines that carry a legend label; an errorbar's label sits on its
    container, so its data line is listed under that label."""
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    for c in ax.containers:
        if hasattr(c, "has_xerr") and not c.get_label().startswith("_") and c.lines[0] is not None:
            lines[c.get_label()] = c.lines[0]
    return lines
