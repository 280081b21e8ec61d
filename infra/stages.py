"""Content-hashed stage directories: the pipeline's "make" (llm/pipeline/run.py uses it).

``Stages(work).run(name, config, inputs, fn, code=...)`` runs ``fn(path)`` in
``<work>/<name>-<hash>/`` unless that folder's ``stage.json`` exists already and every file the
stage wrote is still there with its size (``stage.json`` lists them under ``"outputs"``); a stage
whose outputs were deleted or truncated since is re-run. The hash covers the stage kind (``name`` up to its first "-"), its config, the hashes of the
stages it reads (``inputs``) and ``code_hash`` of the code that produces it (infra/codehash.py),
so an edit re-runs exactly the stages whose code changed and the stages downstream of them.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from infra.cache import cache_key, config_hash
from infra.files import write_json

__all__ = ["Stages", "stage_hash"]


def stage_hash(name: str, config: dict, inputs: list[str], code) -> str:
    """The folder hash of stage ``name``: its kind (``name`` up to the first "-"), config, input
    stages' hashes and the code hash of ``code`` (a producer or a tuple of them)."""
    return config_hash(cache_key({"stage": name.split("-")[0], "config": config, "inputs": inputs}, code))


class Stages:
    """Runs stages in ``work``; ``force`` redoes every stage; ``log`` gets one line per stage."""

    def __init__(self, work, force: bool = False, log=print):
        self.work, self.force, self.log = Path(work), force, log

    def run(self, name: str, config: dict, inputs: list[str], fn, code=None) -> dict:
        """The stage's record ({"name", "hash", "config", "inputs", "seconds", "info", "path"}).

        ``code``: the producer(s) to hash (default ``fn``); ``fn(path) -> info`` does the work.
        """
        h = stage_hash(name, config, inputs, fn if code is None else code)
        path = self.work / f"{name}-{h}"
        marker = path / "stage.json"
        if marker.exists() and not self.force:
            info = json.loads(marker.read_text())
            missing = _missing(path, info.get("outputs"))
            if not missing:
                self.log(f"[skip] {name} (unchanged, {path.name})")
                return {**info, "path": path}
            self.log(f"[redo] {name}: its output {missing} is missing or changed size")
        shutil.rmtree(path, ignore_errors=True)   # a half-finished earlier attempt
        path.mkdir(parents=True)
        start = time.perf_counter()
        self.log(f"[run ] {name} ...")
        info = fn(path) or {}
        seconds = time.perf_counter() - start
        record = {"name": name, "hash": h, "config": config, "inputs": inputs,
                  "seconds": round(seconds, 2), "info": info, "outputs": _outputs(path)}
        write_json(marker, record)
        self.log(f"[done] {name} in {seconds:.1f} s")
        return {**json.loads(marker.read_text()), "path": path}


def _outputs(path: Path) -> dict[str, int]:
    """Every file the stage left in its folder: relative path -> size in bytes."""
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}


def _missing(path: Path, outputs) -> str | None:
    """The first recorded output that is gone or has another size (a marker without an output list,
    written before outputs were recorded, counts as incomplete)."""
    if outputs is None:
        return "list (stage.json predates output records)"
    for rel, size in outputs.items():
        f = path / rel
        if not f.is_file() or f.stat().st_size != size:
            return rel
    return None
