"""Content-hashed stage directories: the pipeline's "make" (llm/pipeline.py uses it).

``Stages(work).run(name, config, inputs, fn, code=...)`` runs ``fn(path)`` in
``<work>/<name>-<hash>/`` unless that folder's ``stage.json`` exists already (then it is skipped).
The hash covers the stage kind (``name`` up to its first "-"), its config, the hashes of the
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

__all__ = ["Stages"]


class Stages:
    """Runs stages in ``work``; ``force`` redoes every stage; ``log`` gets one line per stage."""

    def __init__(self, work, force: bool = False, log=print):
        self.work, self.force, self.log = Path(work), force, log

    def run(self, name: str, config: dict, inputs: list[str], fn, code=None) -> dict:
        """The stage's record ({"name", "hash", "config", "inputs", "seconds", "info", "path"}).

        ``code``: the producer(s) to hash (default ``fn``); ``fn(path) -> info`` does the work.
        """
        kind = name.split("-")[0]
        h = config_hash(cache_key({"stage": kind, "config": config, "inputs": inputs},
                                  fn if code is None else code))
        path = self.work / f"{name}-{h}"
        marker = path / "stage.json"
        if marker.exists() and not self.force:
            info = json.loads(marker.read_text())
            self.log(f"[skip] {name} (unchanged, {path.name})")
            return {**info, "path": path}
        shutil.rmtree(path, ignore_errors=True)   # a half-finished earlier attempt
        path.mkdir(parents=True)
        start = time.perf_counter()
        self.log(f"[run ] {name} ...")
        info = fn(path) or {}
        seconds = time.perf_counter() - start
        record = {"name": name, "hash": h, "config": config, "inputs": inputs,
                  "seconds": round(seconds, 2), "info": info}
        write_json(marker, record)
        self.log(f"[done] {name} in {seconds:.1f} s")
        return {**json.loads(marker.read_text()), "path": path}
