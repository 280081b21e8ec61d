"""Several ``llm unlearn`` runs in one launched process group, for tests/test_llm_fsdp.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/fsdp_matrix.py RUNS.json

RUNS.json is a list of argument lists for ``python -m llm unlearn``; every rank runs them in turn
through the same entry point (``llm.train.cli.unlearn_main``), so a matrix of configurations pays for
one launch instead of one each. The group joined here is reused by each run (``distributed.setup``
leaves a group it did not join).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from llm.train import distributed
from llm.train.cli import unlearn_main


def main(path: str) -> int:
    d = distributed.setup("cpu", group=True)
    try:
        for argv in json.loads(Path(path).read_text()):
            if unlearn_main(argv) != 0:
                print(f"failed: {argv}", file=sys.stderr)
                return 1
    finally:
        distributed.teardown(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
