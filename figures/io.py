"""Result files shared by every producer (simulations, llm) and consumer (figure scripts).

* Atomic writes: data go to a temporary file in the target directory, then ``os.replace``; a
  crash never leaves a half-written result behind.
* A config-hash cache: ``cached(name, config, compute, root)`` returns the arrays stored under
  ``<root>/<name>-<hash>.npz`` (with a JSON sidecar holding the config) or computes and stores them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

#: Bump when a producer changes the meaning of what it stores; old cache entries are then ignored.
CACHE_VERSION = 1
DEFAULT_RESULTS_DIR = Path("results")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_jsonl(path, rows) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in rows))


def write_npz(path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def config_hash(config: dict) -> str:
    blob = json.dumps({"config": config, "cache_version": CACHE_VERSION}, sort_keys=True,
                      default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached(name: str, config: dict, compute: Callable[[], dict[str, np.ndarray]],
           root=DEFAULT_RESULTS_DIR, force: bool = False) -> dict[str, np.ndarray]:
    """Load ``<root>/<name>-<hash>.npz`` if its sidecar config matches, else compute and store it."""
    root = Path(root)
    stem = root / f"{name}-{config_hash(config)}"
    npz, sidecar = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not force and npz.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("config") == json.loads(json.dumps(config, default=_jsonable)):
            return read_npz(npz)
    arrays = compute()
    write_npz(npz, **arrays)
    write_json(sidecar, {"name": name, "config": config, "cache_version": CACHE_VERSION})
    return arrays


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
