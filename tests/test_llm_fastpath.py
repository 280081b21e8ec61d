"""The CPU fast paths of training and scoring: the vocabulary projection at answer positions only
(llm.models.logits_at / answer_logprob) gives the full-logits losses of every method, bf16 autocast
stays within its stated tolerance of fp32, and length-bucketed batches keep every item once."""
from __future__ import annotations

import pytest
import torch

import llm.train.loop as train
import llm.train.unlearning as unlearning
from llm.data.formatting import collate
from llm.train.methods import REGISTRY
from llm.models import answer_logprob, load_model_and_tokenizer, sequence_logprob
from llm.train.loop import TrainConfig, micro_losses
from llm.train.unlearning import prepare_run
from conftest import micro_train_config, save_tiny_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=1)


def _cfg(target, tofu_dir, tmp_path, **kw) -> TrainConfig:
    return micro_train_config(target, tofu_dir, tmp_path, **{"batch_size": 4, **kw})


def _full_logits_at(model, input_ids, attention_mask, keep):
    """The reference: every position through the head, then the wanted ones selected."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[keep]


def _rows(run, n=6):
    return collate(run.train[:n], run.tokenizer.pad_token_id)


def test_answer_logprob_equals_full_logits_and_projects_only_answers(target, tofu_dir, tmp_path):
    model, tok = load_model_and_tokenizer(str(target))
    run = prepare_run(_cfg(target, tofu_dir, tmp_path, method="ga"), "unlearn")
    b = _rows(run)
    full = sequence_logprob(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                            b["labels"])
    rows_seen = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, args, out: rows_seen.append(out.shape[0]))
    try:
        fast = answer_logprob(model, b["input_ids"], b["attention_mask"], b["labels"])
    finally:
        hook.remove()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    n_answer = int((b["labels"][:, 1:] != -100).sum())
    assert rows_seen == [n_answer] and n_answer < b["input_ids"].numel()  # not B x T rows
    assert "forward" not in head.__dict__  # the head is restored


@pytest.mark.parametrize("method", [m for m, s in REGISTRY.items() if not s.needs & {"logits", "ref_logits", "hidden"}])
def test_every_methods_loss_equals_the_full_logits_path(method, target, tofu_dir, tmp_path, monkeypatch):
    run = prepare_run(_cfg(target, tofu_dir, tmp_path, method=method), "unlearn")
    (items,) = run.plan.items(0, 0, 1, 4, 1)
    if run.ref is not None:  # per-item weights away from 1/2 so that the terms are not degenerate
        run.ref["forget"] = run.ref["forget"] + torch.linspace(-6.0, 6.0, len(run.ref["forget"]))
    fast = micro_losses(run, run.model, items)
    fast_grad = torch.autograd.grad(fast["loss"], [p for p in run.model.parameters()], allow_unused=True)
    monkeypatch.setattr(train, "logits_at", _full_logits_at)
    monkeypatch.setattr(unlearning, "logits_at", _full_logits_at)  # the live reference's KL pass
    full = micro_losses(run, run.model, items)
    full_grad = torch.autograd.grad(full["loss"], [p for p in run.model.parameters()], allow_unused=True)
    for k in ("loss", "forget_loss", "retain_loss"):
        torch.testing.assert_close(fast[k], full[k], rtol=1e-5, atol=1e-6, msg=f"{method} {k}")
    for g, h in zip(fast_grad, full_grad):
        if g is None or h is None:
            assert g is None and h is None
        else:
            torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


# ---- length buckets (llm.data.order) ----------------------------------------------------------------

def _plan(bucket, seed=3, n=37, n_retain=50, eb=4, epochs=3):
    from llm.data.order import make_order
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 120, (n,), generator=gen).tolist()
    retain_lengths = torch.randint(20, 120, (n_retain,), generator=gen).tolist()
    cfg = TrainConfig(epochs=epochs, effective_batch=eb, batch_size=2, seed=seed, bucket=bucket,
                      warmup_epochs=0.0)
    return make_order(cfg, n, n_retain, 0, lengths, retain_lengths), lengths, retain_lengths


def _padding(plan, lengths, retain_lengths):
    """Padded minus real tokens over all micro-batches (forget + retain rows in one forward)."""
    pad = 0
    for step in range(plan.steps):
        for micro in plan.items(step, 0, 1, 2, 2):
            rows = [lengths[i] for i, _, _, _ in micro] + [retain_lengths[r] for _, r, _, _ in micro]
            pad += len(rows) * max(rows) - sum(rows)
    return pad


def test_buckets_keep_every_item_once_per_epoch_and_are_seed_deterministic():
    plain, lengths, rl = _plan(0)
    bucketed, _, _ = _plan(4)
    n = plain.n
    for epoch in range(3):
        seen = [bucketed.item_at(epoch * n + j) for j in range(n)]
        assert sorted(i for i, _, _, e in seen) == list(range(n)) and {e for *_, e in seen} == {epoch}
        # the same retain draws per window, only re-paired
        for s in range(0, n, bucketed.window):
            window_b = seen[s:s + bucketed.window]
            window_p = [plain.item_at(epoch * n + j) for j in range(s, min(n, s + bucketed.window))]
            assert sorted(i for i, *_ in window_b) == sorted(i for i, *_ in window_p)
            assert sorted(r for _, r, _, _ in window_b) == sorted(r for _, r, _, _ in window_p)
    again, _, _ = _plan(4)
    positions = range(plain.steps * plain.effective_batch)
    assert [bucketed.item_at(p) for p in positions] == [again.item_at(p) for p in positions]
    other, _, _ = _plan(4, seed=4)
    assert [bucketed.item_at(p) for p in positions] != [other.item_at(p) for p in positions]
    # and the point of it: far less padding than the plain seeded order
    assert _padding(bucketed, lengths, rl) < 0.5 * _padding(plain, lengths, rl)


@pytest.mark.slow
def test_resume_with_buckets_is_bit_identical(target, tofu_dir, tmp_path):
    from llm.train.unlearning import unlearn
    common = dict(method="npo_rt", max_examples=20, save_every=2, batch_size=2, bucket=2)
    full = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "a"), **common))
    unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "b"), stop_after=3, **common))
    resumed = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "b"), resume=True, **common))
    assert (resumed / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    assert (resumed / "log.jsonl").read_text() == (full / "log.jsonl").read_text()
    plain = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "c"), **{**common, "bucket": 0}))
    assert (plain / "log.jsonl").read_text() != (full / "log.jsonl").read_text()  # buckets did act


# ---- the CPU training benchmark's smoke test ------------------------------------------------------

@pytest.mark.slow
def test_bench_cpu_train_quick(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu_train.py"
    spec = importlib.util.spec_from_file_location("bench_cpu_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--threads", "1", "--json"]) == 0
    import json
    r = json.loads(capsys.readouterr().out)
    assert r["peak_gflops"]["fp32"] > 0 and r["peak_gflops"]["bf16"] > 0
    tiny = r["models"]["tiny"]
    for prec in ("fp32", "bf16-mixed"):
        m = tiny[prec]
        assert m["tokens_per_s"] == pytest.approx(8 * 64 / m["s_per_step"])
        assert 0 < m["fraction_of_peak"] < 1


# ---- the evaluation floor's counting -------------------------------------------------------------

def _floor_module():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_eval_floor.py"
    spec = importlib.util.spec_from_file_location("bench_eval_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_floor_counts_each_distinct_prefix_once():
    """Two answers of one question share the question and their first word: the blocks run once
    per distinct prefix, the head once per distinct position that predicts an answer token."""
    floor = _floor_module()
    q, a1, a2 = [1, 2, 3], [7, 8, 9], [7, 5]
    seqs = [q + a1, q + a2, q + a1]                    # the third is a repeat
    scored = [[False] * 3 + [True] * len(a) for a in (a1, a2, a1)]
    positions, head = floor.trie_positions(seqs, scored)
    assert positions == 3 + 3 + 1                      # q, then 7 8 9 and the branch 5
    assert head == 1 + 1 + 1                           # after 3 (predicts 7), after 7 (8 or 5), after 8
    assert floor.trie_positions([q, q + [4]]) == (4, 0)
