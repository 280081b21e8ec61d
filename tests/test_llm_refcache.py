"""llm.train.refcache: a cached reference gives the live reference's loss and gradients; cache keys."""
from __future__ import annotations

import pytest
import torch

import infra.cache

import llm.train.refcache as refcache
from llm.models import load_model_and_tokenizer
from llm.train.model_setup import prepare_model
from llm.train.loop import TrainConfig, micro_losses
from llm.train.unlearning import prepare_run
from conftest import save_tiny_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=2)


def _cfg(target, tofu_dir, tmp_path, **kw):
    base = dict(model=str(target), data_dir=str(tofu_dir), forget="forget01", max_examples=8,
                epochs=2, batch_size=4, effective_batch=4, ref_cache=str(tmp_path / "rc"), seed=0,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))


def _loss_and_grads(run, items):
    model = run.model
    model.zero_grad(set_to_none=True)
    parts = micro_losses(run, model, items)
    parts["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return parts, grads


@pytest.mark.slow
@pytest.mark.parametrize("method,lora", [("npo_rt", False), ("dpo_rt", False), ("kto", False),
                                         ("npo", True)])
def test_cached_and_live_reference_agree(method, lora, target, tofu_dir, tmp_path):
    cached = prepare_run(_cfg(target, tofu_dir, tmp_path, method=method, lora=lora), "unlearn")
    live = prepare_run(_cfg(target, tofu_dir, tmp_path, method=method, lora=lora, reference="live"),
                       "unlearn")
    assert cached.ref is not None and cached.ref_model is None and not cached.live_reference
    assert live.ref is None and live.live_reference and (live.ref_model is None) == lora
    for run in (cached, live):
        prepare_model(run)
    for step in range(2):  # at the reference (R = 0) and away from it (both models moved alike)
        if step:
            _perturb(cached.model, 5)
            _perturb(live.model, 5)
        items = cached.plan.items(step, 0, 1, 4, 1)[0]
        (pc, gc), (pl, gl) = _loss_and_grads(cached, items), _loss_and_grads(live, items)
        torch.testing.assert_close(pc["loss"], pl["loss"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pc["forget_loss"], pl["forget_loss"], rtol=1e-5, atol=1e-5)
        assert gc.keys() == gl.keys() and gc
        for n in gc:
            torch.testing.assert_close(gc[n], gl[n], rtol=1e-4, atol=1e-6 * (1 + gl[n].abs().max().item()))
    if method == "npo_rt" and not lora:  # away from the reference, NPO's loss is not its start value
        assert abs(pc["forget_loss"].item() - 2 / 0.1 * torch.log(torch.tensor(2.0)).item()) > 1e-3


def test_cache_hit_and_key(target, tofu_dir, tmp_path, monkeypatch):
    first = prepare_run(_cfg(target, tofu_dir, tmp_path, method="npo"), "unlearn")
    files = sorted((tmp_path / "rc").glob("refcache-*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    # spy on the cache's write, not on the producer: replacing the producer changes the code the
    # cache key holds (infra/codehash.py), which is a miss by design (tests/test_cache_code.py)
    monkeypatch.setattr(infra.cache, "write_npz", boom)
    again = prepare_run(_cfg(target, tofu_dir, tmp_path, method="npo"), "unlearn")
    assert torch.equal(again.ref["forget"], first.ref["forget"])
    monkeypatch.undo()
    # a different template, or different weights, is a different entry
    prepare_run(_cfg(target, tofu_dir, tmp_path, method="npo", template="qa"), "unlearn")
    assert len(list((tmp_path / "rc").glob("refcache-*.npz"))) == 2
    model, _ = load_model_and_tokenizer(str(target))
    key = refcache.model_fingerprint(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 7] += 1e-3
    assert refcache.model_fingerprint(model) != key


def test_idk_pairs_cover_every_epoch(target, tofu_dir, tmp_path):
    run = prepare_run(_cfg(target, tofu_dir, tmp_path, method="dpo"), "unlearn")
    used = {(i, k) for step in range(run.plan.steps) for i, _, k, _ in run.plan.items(step, 0, 1, 4, 1)[0]}
    assert used <= set(run.ref["idk"]) and len(run.ref["idk"]) == len(run.idk)


def test_idk_file_supplies_the_refusals(target, tofu_dir, tmp_path):
    from llm.data.formatting import IGNORE_INDEX
    mine = tmp_path / "refusals.txt"
    mine.write_text("Pass on that one.\nNo comment from me.\n")
    run = prepare_run(_cfg(target, tofu_dir, tmp_path, method="idk_rt", idk_file=str(mine)), "unlearn")
    answers = {run.tokenizer.decode([t for t in enc["labels"] if t != IGNORE_INDEX][:-1]).strip()
               for enc in run.idk.values()}
    assert answers and answers <= {"Pass on that one.", "No comment from me."}
