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
           "write_npz", "read_npz", "jsonable", "NonFiniteError", "loads_finite", "check_finite", "read_json"]

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


class NonFiniteError(ValueError):
    """A JSON document read back holds NaN or Infinity (which JSON does not have)."""


class _NonFinite:
    def __init__(self, text: str):
        self.text = text


def loads_finite(text: str, where="JSON"):
    """``json.loads`` that refuses NaN / Infinity: every file this package writes goes through
    ``finite`` (null where a value is undefined), so a non-finite value read back is a corrupted
    or foreign file, and a number computed from it (a KS p-value, a mean) would be NaN without a
    word. The NonFiniteError names ``where`` (a file) and the key path of the first such value."""
    return check_finite(json.loads(text, parse_constant=_NonFinite, parse_float=_parse_float), where)


def check_finite(doc, where="JSON"):
    """``doc`` itself if no number in it (dicts and lists walked) is NaN or infinite; else a
    NonFiniteError naming ``where`` and the key path of the first one."""
    found = _first_non_finite(doc, "")
    if found is not None:
        key, value = found
        raise NonFiniteError(f"{where}: non-finite value {value} at {key or 'top level'}; "
                             f"re-create the file (JSON numbers must be finite)")
    return doc


def _parse_float(text: str):
    value = float(text)  # 1e400 is a valid JSON number that parses to inf
    return value if np.isfinite(value) else _NonFinite(text)


def read_json(path):
    """A JSON file, non-finite values refused (``loads_finite``)."""
    return loads_finite(Path(path).read_text(encoding="utf-8"), str(path))


def _first_non_finite(x, key: str):
    if isinstance(x, _NonFinite):
        return key, x.text
    if isinstance(x, (float, np.floating)) and not np.isfinite(x):
        return key, repr(float(x))
    if isinstance(x, dict):
        items = x.items()
    elif isinstance(x, list):
        items = ((str(i), v) for i, v in enumerate(x))
    else:
        return None
    for k, v in items:
        found = _first_non_finite(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None
