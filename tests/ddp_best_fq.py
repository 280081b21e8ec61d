"""An unlearning run under DDP with the pipeline's best-FQ keeper, for tests/test_llm_fsdp.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_best_fq.py TARGET DATA OUT

GA on 8 forget01 items, 4 steps, evaluated every step by a scripted evaluation whose Forget Quality
per step is ``FQ`` (best: step 2, tied by step 3); every call saves the weights it saw as
``OUT/seen-<rank>-<step>.pt``, and rank 0 writes the keeper's choice to ``OUT/best.json``, so the
test can tell which ranks evaluated and compare the kept model with the weights of its step.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from llm.pipeline.best_fq import KeepBestFQ
from llm.train.loop import TrainConfig
from llm.train.unlearning import unlearn

FQ = {0: 0.1, 1: 0.3, 2: 0.9, 3: 0.9, 4: 0.2}


def main(target: str, data: str, out: str) -> int:
    out = Path(out)
    rank = os.environ.get("RANK", "0")

    def scripted(model, tokenizer, step, epoch):
        torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                   out / f"seen-{rank}-{step}.pt")
        return {"forget_quality": FQ[step]}

    keeper = KeepBestFQ(scripted, out / "best_fq")
    cfg = TrainConfig(model=target, data_dir=data, forget="forget01", method="ga", max_examples=8,
                      epochs=2, batch_size=2, effective_batch=4, lr=1e-3, warmup_epochs=0.0, seed=0,
                      device="cpu", strategy="ddp", eval_every=1, out=str(out / "model"))
    unlearn(cfg, eval_fn=keeper)
    if rank == "0":
        (out / "best.json").write_text(json.dumps(keeper.best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
