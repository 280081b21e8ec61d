"""llm/evaluate/membership.py: per-item token statistics from a model, checked against a direct computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llm.evaluate import membership as eval_mia, mia
from llm.data.tofu import load_split
from llm.data.formatting import IGNORE_INDEX
from llm.models import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    return load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=3)


def test_token_stats_match_a_direct_forward(tiny, tofu_dir):
    model, tok = tiny
    rows = load_split("holdout01", tofu_dir)[:5]
    enc = eval_mia.encode_mia_items(tok, rows, "llama2")
    stats = eval_mia.token_stats(model, tok, enc, max_batch_tokens=200)  # padded batches
    for e, s, r in zip(enc, stats, rows):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([e["input_ids"]])).logits[0, :-1].double(), -1)
        labels = torch.tensor(e["labels"][1:])
        pos = (labels != IGNORE_INDEX).nonzero(as_tuple=True)[0]
        lp = logp[pos, labels[pos]].numpy()
        assert s["avg_loss"] == pytest.approx(-lp.mean(), rel=1e-5)
        np.testing.assert_allclose(s["lp"], lp[:-1], rtol=1e-5)          # EOS excluded
        mu, var = mia.vocab_moments(logp[pos[:-1]].numpy())
        np.testing.assert_allclose(s["mu"], mu, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s["var"], var, rtol=1e-3, atol=1e-4)
        assert s["text"].strip() == r["answer"]
    scores = eval_mia.attack_scores(stats, k=0.4)
    assert set(scores) == set(mia.ATTACKS) and all(len(v) == 5 for v in scores.values())
    assert scores["loss"] == [s["avg_loss"] for s in stats]


def test_render_and_read_back_in_open_unlearnings_layout():
    f = {a: [1.0, 2.0] for a in mia.ATTACKS}
    h = {a: [3.0, 4.0] for a in mia.ATTACKS}
    log = eval_mia.render_mia({"forget": f, "holdout": h})
    assert log["mia_min_k"]["agg_value"] == log["mia_min_k"]["auc"] == 1.0
    assert log["mia_min_k"]["forget"]["value_by_index"]["1"] == {"score": 2.0}
    back = eval_mia.read_mia(log)
    assert back["zlib"] == {"forget": [1.0, 2.0], "holdout": [3.0, 4.0]}
    chance = {"min_k": {"forget": [1.0, 2.0], "holdout": [1.0, 2.0]}}  # retain model at AUC 0.5
    summary = eval_mia.mia_summary(back, chance, "all")
    assert summary["privleak"] == pytest.approx(-100.0) and summary["mia_auc"]["loss"] == 1.0
    assert eval_mia.mia_summary(back, back, "ou")["privleak"] is None        # retain AUC 1: undefined
    assert eval_mia.mia_summary(back, back, "ou", "ou")["privleak"] == 0.0
    # no retain log: open-unlearning's ref_value 0.5 (privacy.py), and the summary says so
    assert eval_mia.mia_summary(back, None, "ou") == {
        "privleak": pytest.approx(-100.0), "privleak_reference": "default", "privleak_reference_auc": 0.5}
    assert summary["privleak_reference"] == "retain_log" and summary["privleak_reference_auc"] == 0.5
    with pytest.raises(ValueError, match="no holdout set"):
        eval_mia.holdout_split("forget20")
