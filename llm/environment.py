"""The machine a pipeline run ran on, recorded in its manifest (device, library versions)."""
from __future__ import annotations

import platform

__all__ = ["resolve_device", "device_name", "versions"]


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
