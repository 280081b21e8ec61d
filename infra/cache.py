"""A content-hash cache of arrays: ``cached(name, config, compute, root, code=...)``.

The value lives in ``<root>/<name>-<hash>.npz`` with a JSON sidecar holding its config. The hash
covers the config (the inputs) *and* ``code_hash`` of the code that produces it (infra/codehash.py:
the producers' own source, the project modules they import, the package version), so editing a
gradient or a metric re-computes exactly the results that depend on it and nothing else. There is
no version constant to bump.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from infra.codehash import code_hash
from infra.files import DEFAULT_RESULTS_DIR, jsonable, read_npz, write_json, write_npz

__all__ = ["cached", "config_hash", "cache_key"]


def config_hash(config) -> str:
    """sha256 (12 hex digits) of a JSON-able value, key order ignored."""
    blob = json.dumps(config, sort_keys=True, default=jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_key(config: dict, code) -> dict:
    """What the cache hashes: the inputs and the producing code's hash."""
    producers = code if isinstance(code, (tuple, list)) else (code,)
    return {"config": config, "code": code_hash(*producers)}


def cached(name: str, config: dict, compute: Callable[[], dict[str, np.ndarray]],
           root=DEFAULT_RESULTS_DIR, force: bool = False, code=None) -> dict[str, np.ndarray]:
    """Load ``<root>/<name>-<hash>.npz`` if its sidecar matches, else ``compute()`` and store it.

    ``code``: the producer(s), a function/class/module (a partial or bound method counts as its
    function) or a tuple of them, with the path of any data file they read (default: ``compute``).
    Name the function that does the work when ``compute`` is a thin lambda around it; one whose
    code cannot be read raises TypeError.
    """
    key = cache_key(config, compute if code is None else code)
    stem = Path(root) / f"{name}-{config_hash(key)}"
    npz, sidecar = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if not force and npz.exists() and sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if meta.get("key") == json.loads(json.dumps(key, default=jsonable)):
            return read_npz(npz)
    arrays = compute()
    write_npz(npz, **arrays)
    write_json(sidecar, {"name": name, "key": key})
    return arrays
