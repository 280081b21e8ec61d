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
