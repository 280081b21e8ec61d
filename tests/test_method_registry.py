"""llm.train.methods: the 14 methods moved onto the registry give bit-identical losses and gradients to
the pre-registry code (tests/legacy_losses.py, frozen at e7bb867), and a micro unlearning run logs
the same losses; the registry's bookkeeping (needs, labels, hyper-parameters, the CLI's errors)."""
from __future__ import annotations

import json

import pytest
import torch

import legacy_losses as legacy
from llm.train.methods import REGISTRY, Inputs, by_label, get, resolve_hparams
from llm.pipeline.plan import PAPER_GRID

FLOATS = ("forget_logp", "forget_ref", "retain_logp", "idk_logp", "idk_ref", "retain_kl")
#: a non-default value for each hyper-parameter the 14 methods declare
OTHER = {"beta": 0.37, "forget_weight": 0.6, "retain_weight": 2.5, "delta": 0.2}


def _tensors(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {name: (torch.randn(5, generator=g, dtype=dtype) * 3 - 20) for name in FLOATS}
    t["retain_kl"] = torch.rand(17, generator=g, dtype=dtype)
    t["forget_ref"] = t["forget_logp"] + torch.randn(5, generator=g, dtype=dtype)
    t["idk_ref"] = t["idk_logp"] + torch.randn(5, generator=g, dtype=dtype)
    for k in ("forget_tokens", "retain_tokens", "idk_tokens"):
        t[k] = torch.randint(3, 30, (5,), generator=g)
    for k in FLOATS:
        t[k].requires_grad_(True)
    return t


def _parts_and_grads(fn, cls, t):
    out = fn(cls(**t))
    grads = torch.autograd.grad(out["loss"], [t[k] for k in FLOATS], allow_unused=True)
    return out, dict(zip(FLOATS, grads))


def test_registration_order_labels_and_needs_are_todays():
    # --method's choices and every list keep today's order; methods added later come after them
    assert list(REGISTRY)[:len(legacy.METHODS)] == list(legacy.METHODS)
    for name in legacy.METHODS:
        assert REGISTRY[name].needs == legacy.METHODS[name].needs, name
    for name, m in REGISTRY.items():
        assert get(name) is m and by_label(m.label) is m
    assert {m.label for m in REGISTRY.values()} >= set(PAPER_GRID)
    assert by_label("NPO+RT").name == "npo_rt" and by_label("IDK+RT").name == "idk_rt"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(legacy.METHODS))
@pytest.mark.parametrize("which", ["default", "other"])
def test_loss_and_gradients_are_bit_identical_to_the_legacy_code(name, dtype, which):
    m = REGISTRY[name]
    hp = dict(m.hparams) if which == "default" else {k: OTHER[k] for k in m.hparams}
    # legacy: its own signature defaults at "default" (so the registry's defaults are checked too)
    legacy_kw = {} if which == "default" else hp
    t = _tensors(dtype)
    new, new_g = _parts_and_grads(lambda x: m.loss(x, **hp), Inputs, t)
    old, old_g = _parts_and_grads(lambda x: legacy.METHODS[name](x, **legacy_kw), legacy.LossInputs, t)
    for k in ("loss", "forget_loss", "retain_loss"):
        assert new[k].dtype == old[k].dtype == dtype
        assert torch.equal(new[k], old[k]), (k, new[k], old[k])
        assert new[k].requires_grad == old[k].requires_grad
    for k in FLOATS:
        assert (new_g[k] is None) == (old_g[k] is None), k
        if old_g[k] is not None:
            assert torch.equal(new_g[k], old_g[k]), k
    # the comparison has teeth: some input moves the loss
    assert any(g is not None and g.abs().sum() > 0 for g in new_g.values())


def test_a_planted_difference_is_seen():
    """The equality above is exact: one ulp of beta changes NPO's loss bits."""
    t = _tensors(torch.float64)
    a = REGISTRY["npo"].loss(Inputs(**t), beta=0.1, forget_weight=1.0)["loss"]
    b = legacy.METHODS["npo"](legacy.LossInputs(**t), beta=0.1 + 2 ** -56)["loss"]
    assert not torch.equal(a, b)


def test_hparams_resolve_by_name_with_the_method_defaults():
    assert resolve_hparams(get("simnpo"), {}) == {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125}
    assert resolve_hparams(get("npo_rt"), {"beta": "0.5"})["beta"] == 0.5  # --hp strings parse
    with pytest.raises(ValueError, match="npo has no hyper-parameter 'gamma'; its --hp names are beta"):
        resolve_hparams(get("npo"), {"gamma": 1})
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="beta must be > 0 for npo"):
            resolve_hparams(get("npo"), {"beta": bad})
    with pytest.raises(ValueError, match="expected a float"):
        resolve_hparams(get("npo"), {"beta": "x"})
    with pytest.raises(ValueError, match="unknown method 'npx'; use one of ga, ga_rt"):
        get("npx")


# ---- the trainer on the registry: a micro run, the CLI's errors, token-level inputs ----------------

#: log.jsonl (loss, forget_loss, retain_loss, grad_norm) of conftest.micro_train_config's npo_rt run
#: from the tiny target of seed 1, recorded on the pre-registry code (commit e7bb867) on a 2-core
#: x86 CPU, fp32, one torch thread.
E7BB867_NPO_RT = [(21.518659591674805, 13.862943649291992, 7.655716180801392, 44.679728506400934),
                  (20.204360008239746, 12.407700538635254, 7.796658992767334, 26.59460940031876),
                  (19.607090950012207, 11.339302062988281, 8.267788887023926, 18.33866969738352)]


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    from conftest import save_tiny_target
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=1)


def _log(out) -> list[tuple]:
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    return [(r["loss"], r["forget_loss"], r["retain_loss"], r["grad_norm"]) for r in rows]


def _legacy_method(name):
    """The registry entry with its loss replaced by the legacy function on the same inputs."""
    import dataclasses
    fields = [f.name for f in dataclasses.fields(legacy.LossInputs)]

    def loss(x, **hp):
        return legacy.METHODS[name](legacy.LossInputs(**{f: getattr(x, f) for f in fields}), **hp)
    return dataclasses.replace(REGISTRY[name], loss=loss)


def test_a_micro_npo_rt_run_logs_the_pre_registry_losses(target, tofu_dir, tmp_path, monkeypatch, one_torch_thread):
    from conftest import micro_train_config
    from llm.train.unlearning import unlearn
    new = _log(unlearn(micro_train_config(target, tofu_dir, tmp_path / "new", method="npo_rt")))
    flat = [v for row in E7BB867_NPO_RT for v in row]
    assert [v for row in new for v in row] == pytest.approx(flat, rel=1e-6)  # bit-equal where recorded
    monkeypatch.setitem(REGISTRY, "npo_rt", _legacy_method("npo_rt"))
    old = _log(unlearn(micro_train_config(target, tofu_dir, tmp_path / "old", method="npo_rt")))
    assert new == old  # exactly: the same run through the legacy loss


def _unlearn_cli(target, tofu_dir, tmp_path, *flags) -> int:
    """``python -m llm unlearn`` in-process; its exit code (argparse's errors exit from inside)."""
    from llm.train.cli import unlearn_main
    try:
        return unlearn_main(["--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
                             "--max-examples", "8", "--epochs", "1", "--batch-size", "2", "--effective-batch", "4",
                             "--ref-cache", str(tmp_path / "rc"), "--out", str(tmp_path / "out"), *flags])
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("flags,message", [
    (["--method", "npx"], "unknown method 'npx'; use one of ga, ga_rt"),
    (["--method", "npo", "--hp", "gamma=1"], "npo has no hyper-parameter 'gamma'; its --hp names are beta"),
    (["--method", "npo", "--hp", "beta=0"], "beta must be > 0 for npo"),
    (["--method", "npo", "--hp", "beta=x"], "--hp beta=x: expected a float"),
    (["--method", "npo", "--hp", "beta"], "--hp takes NAME=VALUE"),
    (["--method", "npo", "--beta", "0.2", "--hp", "beta=0.3"], "--beta 0.2 and --hp beta=0.3 disagree"),
])
def test_cli_refuses_bad_methods_and_hparams_in_one_line(flags, message, target, tofu_dir, tmp_path, capsys):
    assert _unlearn_cli(target, tofu_dir, tmp_path, *flags) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("Loading weights")]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_resume_refuses_a_changed_hparam_and_help_lists_the_registry(target, tofu_dir, tmp_path, capsys):
    assert _unlearn_cli(target, tofu_dir, tmp_path, "--method", "npo", "--hp", "beta=0.2", "--save-every", "1",
                        "--stop-after", "1") == 0
    capsys.readouterr()
    assert _unlearn_cli(target, tofu_dir, tmp_path, "--method", "npo", "--beta", "0.3", "--resume") == 2
    err = capsys.readouterr().err
    assert "--hp beta: 0.2 -> 0.3" in err and err.count("\n") == 1, err
    from llm.train.config import parser
    from llm.train.unlearning import OBJECTIVE
    text = parser("unlearn", OBJECTIVE.methods).format_help()
    assert all(name in text for name in REGISTRY) and "--hp NAME=VALUE" in text


def _probe(seen):
    """A method on token-level inputs only, registered by the test: it records what it was given."""
    from llm.train.methods import Method

    def loss(x, forget_weight):
        seen.append(x)
        forget = -(x.forget_token_logp - x.forget_ref_token_logp).sum() / x.forget_mask.sum()
        return {"loss": forget_weight * forget, "forget_loss": forget.detach(),
                "retain_loss": forget.new_zeros(())}
    return Method(name="token_probe", label="TokenProbe", forget="token_probe", regulariser="none",
                  hparams={"forget_weight": 1.0}, needs=frozenset({"token", "ref_token"}), loss=loss,
                  colour="#000000")


@pytest.mark.parametrize("reference", ["cached", "live"])
def test_token_inputs_are_the_per_token_log_probs_of_the_answers(reference, target, tofu_dir, tmp_path,
                                                                   monkeypatch, one_torch_thread):
    from conftest import micro_train_config
    from llm.train.unlearning import micro_losses, prepare_run
    seen = []
    monkeypatch.setitem(REGISTRY, "token_probe", _probe(seen))
    run = prepare_run(micro_train_config(target, tofu_dir, tmp_path, method="token_probe", reference=reference))
    assert (run.ref is None) == (reference == "live")
    (items,) = run.plan.items(0, 0, 1, run.cfg.batch_size, 1)
    parts = micro_losses(run, run.model, items)
    x = seen[-1]
    assert x.forget_ref is None and x.retain_logp is None and x.idk_logp is None  # only what it needs
    mask, logp, ref = x.forget_mask, x.forget_token_logp, x.forget_ref_token_logp
    assert mask.dtype == torch.bool and logp.shape == ref.shape == mask.shape
    assert torch.equal(mask.sum(-1), x.forget_tokens)
    assert not logp[~mask].any() and not ref[~mask].any()
    torch.testing.assert_close(logp.sum(-1), x.forget_logp, rtol=1e-6, atol=1e-5)
    # independently: each forget row alone, log-softmax of the full logits at each answer token
    with torch.no_grad():
        for row, (i, _, _, _) in enumerate(items):
            enc = run.train[i]
            full = torch.log_softmax(run.model(input_ids=torch.tensor([enc["input_ids"]])).logits[0].float(), -1)
            want = [full[t - 1, enc["input_ids"][t]] for t, y in enumerate(enc["labels"]) if y != -100]
            torch.testing.assert_close(logp[row][mask[row]].detach(), torch.stack(want), rtol=1e-5, atol=1e-5)
            # the reference is the model before unlearning (no dropout in the tiny preset): the same values
            torch.testing.assert_close(ref[row][mask[row]], torch.stack(want), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(parts["loss"], [p for p in run.model.parameters() if p.requires_grad],
                                allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads) and ref.grad_fn is None


def test_a_method_needing_inputs_the_trainer_cannot_build_is_refused_in_one_line(monkeypatch):
    import dataclasses
    from llm.train.config import ConfigError
    from llm.train.unlearning import INPUT_BUILDERS, OBJECTIVE
    monkeypatch.setitem(REGISTRY, "hidden_probe", dataclasses.replace(
        REGISTRY["npo"], name="hidden_probe", label="HiddenProbe", needs=frozenset({"hidden", "ref"})))
    if "hidden" in INPUT_BUILDERS:  # the other kinds of input have landed: nothing left to refuse
        assert OBJECTIVE.needs("hidden_probe") == {"hidden", "ref"}
        return
    with pytest.raises(ConfigError, match="hidden_probe needs hidden inputs, which this trainer does not build"):
        OBJECTIVE.needs("hidden_probe")


def test_the_pipeline_keeps_the_paper_grid_knobs_and_runs_other_methods_at_their_defaults():
    from llm.pipeline.run import _hparams
    from llm.pipeline.plan import PRESETS, RunSpec
    p = PRESETS["cpu"]
    for label in PAPER_GRID:  # exactly the knobs (part of every run's stage key) of before the registry
        assert _hparams(RunSpec("forget10", label, 0, 2.0), p) == {"beta": 0.1, "forget_weight": 1.0,
                                                                  "retain_weight": 2.0}
    assert _hparams(RunSpec("forget10", "NPO", 0, 1.0, "beta", 1.0), p)["beta"] == 1.0
    assert _hparams(RunSpec("forget10", "SimNPO", 0, 1.0), p) == {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125}
    assert _hparams(RunSpec("forget10", "SimNPO+RT", 0, 5.0), p)["retain_weight"] == 5.0


def test_alias_flags_apply_where_the_method_has_the_hyper_parameter():
    from llm.train.config import TrainConfig
    from llm.train.unlearning import OBJECTIVE

    def resolved(**kw):
        cfg = OBJECTIVE.resolve(TrainConfig(**kw))
        assert (cfg.beta, cfg.forget_weight, cfg.retain_weight) == (None, None, None)  # folded in
        return cfg.hparams
    assert resolved(method="ga", beta=0.0) == {"forget_weight": 1.0}  # GA has no beta: ignored, as before
    assert resolved(method="simnpo", retain_weight=3.0) == {"beta": 4.5, "delta": 0.0, "forget_weight": 0.125}
    assert resolved(method="npo_rt", beta=0.2, hparams={"beta": "0.2"}, retain_weight=5.0) == \
        {"beta": 0.2, "forget_weight": 1.0, "retain_weight": 5.0}
    assert resolved(method="simnpo", hparams={"delta": "0.5"})["delta"] == 0.5
