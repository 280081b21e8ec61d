"""Result files written atomically: text, JSON, JSONL, ``.npz``.

Data go to a temporary file beside the target, then ``os.replace``: a crash or an error never
leaves a half-written result behind. Files get the permissions an ordinary ``open`` would give
(0666 less the process umask), not ``mkstemp``'s 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["DEFAULT_RESULTS_DIR", "finite", "atomic_path", "write_text", "write_json", "write_jsonl",
           "write_npz", "read_npz", "jsonable"]

DEFAULT_RESULTS_DIR = Path("results")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process umask, read at write time (importing this module changes nothing)."""
    try:  # Linux: readable without touching it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it and set it back
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=jsonable) + "\n")


def write_jsonl(path, rows) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True, default=jsonable) + "\n" for r in rows))


def write_npz(path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def finite(x):
    """JSON has no NaN or inf: values never reached / not defined become null (numpy scalars
    become Python numbers, containers are walked; arrays are left to ``jsonable``)."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def jsonable(x):
    """``json.dumps(default=...)`` for numpy arrays and scalars and paths."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
