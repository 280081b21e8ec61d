"""python -m llm collapse-rate: the recorded log-ratio, the JSON and bad input (its fits: test_collapse_fits.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(tofu_dir, tmp_path):
    from llm.studies import collapse_rate as cr
    from llm.models import load_model_and_tokenizer
    from tests.conftest import save_tiny_target

    target = save_tiny_target(tofu_dir, tmp_path / "target", seed=0)
    cfg = cr.Config(model=str(target), data_dir=str(tofu_dir), forget="forget01", n_forget=3,
                    steps=12, retain_items=2, lr=1e-3, per_decade=4)
    model, tok = load_model_and_tokenizer(str(target), dtype=torch.float32, data_dir=str(tofu_dir))
    forget = cr.forget_items(cfg, 0)
    return cr, cfg, target, model, tok, forget


def test_forget_logratio_starts_at_zero_and_matches_the_reference_cache(tofu_dir, tmp_path):
    from llm.data.formatting import collate, encode_qa, pad_id
    from llm.models import load_model_and_tokenizer, sequence_logprob
    from llm.train.refcache import cached_reference_logps

    cr, cfg, target, model, tok, forget = _setup(tofu_dir, tmp_path)
    ref = cr._reference(model, tok, forget, cfg, tmp_path, str(target))
    cache_files = sorted((tmp_path / "refcache").glob("*.npz"))
    assert len(cache_files) == 1
    rec = cr.run_method(model, tok, forget, cr.retain_items(cfg, forget), ref, cfg, "npo", 0.5,
                        restore=False)
    assert rec["steps"][0] == 0 and rec["steps"][-1] == cfg.steps
    assert abs(rec["forget_logratio"][0]) < 1e-4
    assert rec["forget_logratio"][-1] < -0.01  # NPO moved the forget answers down
    # the same number, computed directly: the moved model item by item minus the CACHED reference
    fresh, _ = load_model_and_tokenizer(str(target), dtype=torch.float32, data_dir=str(tofu_dir))
    enc = [encode_qa(tok, r["question"], r["answer"], cfg.template) for r in forget]
    cached = cached_reference_logps(fresh, {"forget": enc}, pad_id(tok), tmp_path / "refcache",
                                    identity=str(target), precision="fp32")["forget"]
    assert sorted((tmp_path / "refcache").glob("*.npz")) == cache_files  # a cache hit, not a new entry
    model.eval()
    with torch.no_grad():
        now = [float(sequence_logprob(model(**{k: v for k, v in b.items() if k != "labels"}).logits,
                                      b["labels"])[0])
               for b in (collate([e], pad_id(tok)) for e in enc)]
    assert rec["forget_logratio"][-1] == pytest.approx(float(np.mean(np.array(now) - cached)), abs=1e-3)
    with torch.no_grad():
        dist = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), fresh.parameters())))
    assert rec["param_distance"][-1] == pytest.approx(float(dist), rel=1e-4)
    assert rec["param_distance"][0] == 0.0
    # W = 2 sigma(beta * mean-free log-ratio) per item, averaged; 1 at the start
    assert rec["npo_weight"][0] == pytest.approx(1.0, abs=1e-4) and rec["npo_weight"][-1] < 1.0


def test_tiny_target_is_cached_by_its_rows_and_the_code_that_trains_it(tofu_dir, tmp_path, monkeypatch):
    """The tiny target is an infra stage: a second call reuses it; an edit of its producer
    (``_finetune_tiny`` itself, or llm/train/loop.py that it imports) or other rows train a new one; an
    edit of a module it does not import does not. Edits are simulated as tests/test_cache_code.py does."""
    from dataclasses import replace
    from pathlib import Path

    import llm.train.loop
    from infra import codehash
    from llm.studies import collapse_rate as cr

    trained = []

    def fake_finetune(config, eval_fn=None):  # the real recipe takes minutes; its inputs are what count
        trained.append(config)
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "config.json").write_text("{}")

    monkeypatch.setattr(llm.train.loop, "finetune", fake_finetune)
    cfg = cr.Config(data_dir=str(tofu_dir), finetune_items=8)
    make = lambda c=cfg: cr.tiny_target(c, tmp_path, log=lambda *a: None)  # noqa: E731
    first = make()
    assert (first / "config.json").exists() and first.parent.name.startswith("tiny-target-")
    assert trained[0].max_examples == 8 and trained[0].lr == cr.TINY_RECIPE["lr"]
    assert make() == first and len(trained) == 1                           # unchanged: reused
    real_module, real_source = codehash.module_source, codehash._source

    def edited_module(target):
        return lambda name: real_module(name) + (b"\n# edited\n" if name == target else b"")

    monkeypatch.setattr(codehash, "module_source", edited_module("llm.studies.tofu_claims"))
    assert make() == first and len(trained) == 1                           # not imported: reused
    monkeypatch.setattr(codehash, "module_source", edited_module("llm.train.loop"))
    by_train = make()
    assert by_train != first and len(trained) == 2                         # the trainer changed
    monkeypatch.setattr(codehash, "module_source", real_module)
    assert make() == first and len(trained) == 2                           # edit undone: the old one
    monkeypatch.setattr(codehash, "_source", lambda obj: real_source(obj) + (
        "# edited" if getattr(obj, "__name__", "") == "_finetune_tiny" else ""))
    by_producer = make()
    assert by_producer not in (first, by_train) and len(trained) == 3      # the producer changed
    monkeypatch.setattr(codehash, "_source", real_source)
    assert make(replace(cfg, finetune_items=9)) not in (first, by_train, by_producer)
    assert len(trained) == 4                                               # other rows


def _cli(args, capsys):
    from llm.__main__ import main
    code = main(["collapse-rate", *args])
    return code, capsys.readouterr()


@pytest.mark.parametrize("bad, message", [
    (["--methods", "ga", "dpo"], "unknown method"),
    (["--beta", "0.1", "0"], "beta"),
    (["--steps", "5"], "--steps"),
    (["--forget", "forget01", "--data-dir", "EMPTY"], "no records"),   # llm.data.tofu's own check
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad, message, tofu_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "full.json").symlink_to(tofu_dir / "full.json")
    (empty / "forget01.json").write_text("[]")
    args = [a if a != "EMPTY" else str(empty) for a in bad]
    if "--data-dir" not in args:
        args += ["--data-dir", str(tofu_dir)]
    out = tmp_path / "out"
    code, cap = _cli([*args, "--results", str(out), "--cache", str(out / "cache")], capsys)
    assert code == 2
    assert len(cap.err.strip().splitlines()) == 1 and message in cap.err
    assert not out.exists()


@pytest.mark.slow
def test_quick_json_has_the_per_method_keys(tofu_dir, tmp_path, capsys):
    code, cap = _cli(["--quick", "--json", "--data-dir", str(tofu_dir), "--results", str(tmp_path),
                      "--cache", str(tmp_path / "cache")], capsys)
    assert code == 0, cap.err
    doc = json.loads(cap.out)
    assert [(m["method"], m["beta"]) for m in doc["methods"]] == [("ga", None), ("npo", 0.1), ("npo", 1.0)]
    for m in doc["methods"]:
        for key in ("method", "beta", "steps", "forget_logratio", "param_distance", "npo_weight",
                    "retain_nll", "grad_norm", "fit"):
            assert key in m
        assert {"linear_r2", "log_r2", "law", "linear_slope", "log_c"} <= set(m["fit"])
        assert len(m["steps"]) == len(m["forget_logratio"]) == len(m["param_distance"])
        assert m["forget_logratio"][0] == pytest.approx(0, abs=1e-4)
    assert json.loads((tmp_path / "llm_collapse_rate.json").read_text())["methods"][0]["method"] == "ga"
