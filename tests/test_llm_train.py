"""llm.train: every method on a ~1M-parameter Llama, resume equality, bad inputs at the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from llm.losses import METHODS
from llm.models import load_model_and_tokenizer
from llm.refcache import reference_logps
from llm.train import Plan, TrainConfig, finetune_main, fit, prepare_run, schedule, unlearn, unlearn_main
from conftest import save_tiny_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    """A saved tiny preset: the 'fine-tuned target' every unlearning run starts from."""
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=1)


def _cfg(target, tofu_dir, tmp_path, **kw) -> TrainConfig:
    base = dict(model=str(target), data_dir=str(tofu_dir), forget="forget01", max_examples=12,
                epochs=1, batch_size=2, effective_batch=4, lr=1e-3, weight_decay=0.0,
                warmup_epochs=0.0, ref_cache=str(tmp_path / "refcache"), out=str(tmp_path / "out"),
                seed=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


CASES = [(m, {}) for m in METHODS] + [("npo_rt", {"lora": True, "gradient_checkpointing": True}),
                                      ("npo_kl", {"lora": True}),
                                      ("npo", {"reference": "live", "gradient_checkpointing": True})]


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", CASES, ids=[f"{m}{'-' + '-'.join(e) if e else ''}" for m, e in CASES])
def test_method_steps_change_every_parameter_and_leave_the_reference(method, extra, target, tofu_dir,
                                                                     tmp_path):
    # SimNPO's default beta 4.5 saturates on an untrained model (softplus(-34)): its gradient
    # underflows float32 updates, so take beta 1 here.
    beta = 1.0 if method.startswith("simnpo") else None
    run = prepare_run(_cfg(target, tofu_dir, tmp_path, method=method, beta=beta, **extra), "unlearn")
    assert run.plan.steps == 3
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    ref_before = None if run.ref is None else run.ref["forget"].clone()
    assert (run.ref_model is not None) == (run.live_reference and not extra.get("lora", False))
    assert fit(run, tmp_path / "work") == 3
    rows = [json.loads(r) for r in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    trainable = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                 for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable
    for name, p in trainable.items():
        if "lora_" in name:
            continue  # new parameters; checked below to have moved from their init
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    if extra.get("lora"):
        lora = [p for n, p in run.model.named_parameters() if "lora_B" in n]
        assert lora and all(p.abs().sum() > 0 for p in lora)  # B starts at 0
        frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                  for n, p in run.model.named_parameters() if not p.requires_grad}
        assert all(torch.equal(p, before[n]) for n, p in frozen.items())  # the reference (base)
    fresh, _ = load_model_and_tokenizer(str(target))
    if ref_before is not None:  # the cache holds the initial model's values, untouched by training
        assert torch.equal(run.ref["forget"], ref_before)
        recomputed = torch.as_tensor(reference_logps(fresh, run.train, run.tokenizer.pad_token_id))
        torch.testing.assert_close(ref_before, recomputed, rtol=1e-5, atol=1e-4)
    if run.ref_model is not None:
        for (n, p), q in zip(run.ref_model.named_parameters(), fresh.parameters()):
            assert torch.equal(p, q), f"reference {n} changed"


@pytest.mark.slow
def test_resume_is_bit_identical(target, tofu_dir, tmp_path):
    common = dict(method="npo_rt", max_examples=20, save_every=2)  # 5 steps, checkpoints at 2 and 4
    full = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "a"), **common))
    partial = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "b"), stop_after=3, **common))
    assert partial.name == "b.partial" and not (tmp_path / "b").exists()
    assert len((partial / "log.jsonl").read_text().splitlines()) == 3
    resumed = unlearn(_cfg(target, tofu_dir, tmp_path, out=str(tmp_path / "b"), resume=True, **common))
    assert not partial.exists()
    assert (resumed / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    assert (resumed / "log.jsonl").read_text() == (full / "log.jsonl").read_text()
    assert not list(resumed.glob("checkpoint-*"))
    cfg = json.loads((resumed / "train_config.json").read_text())
    assert cfg["method"] == "npo_rt" and cfg["beta"] == 0.1 and cfg["retain"] == "retain99"
    model, tok = load_model_and_tokenizer(str(resumed))  # the output is a loadable checkpoint
    assert tok.eos_token_id is not None


def test_schedule_is_linear_warmup_then_decay():
    plan = Plan(n=10, n_retain=0, n_idk=0, effective_batch=1, steps=10, steps_per_epoch=5, warmup=2, seed=0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.8)
    sched, lrs = schedule(opt, plan), []
    for _ in range(plan.steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    expected = [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert lrs == pytest.approx([0.8 * f for f in expected], abs=1e-12)


def _bad_data_dir(tmp_path, tofu_dir, forget_text):
    d = tmp_path / "data"
    d.mkdir(parents=True, exist_ok=True)
    (d / "forget01.json").write_text(forget_text)
    (d / "retain99.json").write_text((tofu_dir / "retain99.json").read_text())
    return d


@pytest.fixture(scope="module")
def no_eos_model(target, tmp_path_factory):
    path = tmp_path_factory.mktemp("noeos")
    model, tok = load_model_and_tokenizer(str(target))
    tok.eos_token = None
    tok.pad_token = "<pad>"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_bad_inputs_one_line_exit_2_nothing_written(target, tofu_dir, tmp_path, capsys, no_eos_model):
    forget = (tofu_dir / "forget01.json").read_text().splitlines()
    broken = "\n".join(forget[:2] + [forget[2][:-5]] + forget[3:])
    cases = {
        "unknown method": (["--method", "npx"], "unknown method 'npx'"),
        "beta zero": (["--beta", "0"], "beta must be > 0"),
        "beta negative": (["--beta", "-0.5"], "beta must be > 0"),
        "missing split file": (["--data-dir", str(tmp_path)], "full.json not found"),
        "malformed line": (["--data-dir", str(_bad_data_dir(tmp_path, tofu_dir, broken))],
                           "forget01.json:3: malformed JSON"),
        "empty forget set": (["--data-dir", str(_bad_data_dir(tmp_path / "e", tofu_dir, "[]"))],
                             "forget01.json: no records"),
        "no eos": (["--model", str(no_eos_model)], "no EOS token"),
        "too long": (["--max-length", "16"], "longer than max_length=16"),
        "unknown model": (["--model", "no-such-model"], "unknown model"),
        "batch split": (["--effective-batch", "5"], "not a multiple"),
        "resume nothing": (["--resume"], "drop --resume"),
    }
    for name, (flags, message) in cases.items():
        argv = ["--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
                "--max-examples", "8", "--epochs", "1", "--batch-size", "2", "--effective-batch", "4",
                "--method", "npo", "--ref-cache", str(tmp_path / "rc"), "--out", str(tmp_path / "out")]
        assert unlearn_main(argv + flags) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        err = [line for line in err if not line.startswith(("Loading weights", "Writing"))]
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (name, err)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists(), name
    assert finetune_main(["--model", str(target), "--data-dir", str(tofu_dir), "--split", "forgot",
                          "--out", str(tmp_path / "out")]) == 2
    assert "unknown TOFU split" in capsys.readouterr().err


def test_finetune_cli_writes_model_log_and_config(target, tofu_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    assert finetune_main(["--model", str(target), "--data-dir", str(tofu_dir), "--max-examples", "8",
                          "--epochs", "2", "--batch-size", "2", "--effective-batch", "4", "--lr", "1e-3",
                          "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 4 and result["out"] == str(out)
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])  # warm-up: 1 epoch
    assert rows[-1]["epoch"] == 2.0 and rows[-1]["loss"] < rows[0]["loss"]
    assert {"step", "epoch", "lr", "loss", "forget_loss", "retain_loss"} <= set(rows[0])
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert json.loads((out / "train_config.json").read_text())["split"] == "full"


def test_eval_hook_rows(target, tofu_dir, tmp_path):
    calls = []

    def eval_fn(model, tokenizer, step, epoch):
        calls.append((step, epoch, model.training))
        return {"model_utility": 0.5, "forget_quality": None}

    out = unlearn(_cfg(target, tofu_dir, tmp_path, method="ga", max_examples=8, epochs=2,
                       eval_every=2), eval_fn=eval_fn)
    assert [c[0] for c in calls] == [0, 2, 4] and not any(c[2] for c in calls)
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4] and evals[-1]["summary"]["model_utility"] == 0.5
