"""The machine a pipeline run ran on, recorded in its manifest (device, library versions)."""
from __future__ import annotations

import os
import platform

__all__ = ["main_rank", "resolve_device", "device_name", "versions"]


def main_rank() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or a single process (no torch import needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(device: str) -> str:
    """``auto`` -> cuda if available else cpu; anything else as given."""
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def device_name(device: str) -> str:
    import torch
    if (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}
