"""NPO's weight and log-ratio read back from a logged loss (theory.objectives), and the claims
command's per-epoch weight table built on it (llm/studies/tofu_claims.py --weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp

from theory import objectives as ob
from llm.studies import tofu_claims
from llm.studies import tofu_results as tr

BETAS = [0.1, 1.0, 5.0]


def test_weight_from_loss_is_sigma_symbolically():
    """W(L(R)) = 2 sigma(beta R) exactly: 2 (1 - exp(-beta/2 * (2/beta) log(1 + e^{beta R})))."""
    beta, r = sp.Symbol("beta", positive=True), sp.Symbol("R", real=True)
    loss = 2 / beta * sp.log(1 + sp.exp(beta * r))
    w = 2 * (1 - sp.exp(-beta * loss / 2))
    assert sp.simplify(w - 2 * sp.exp(beta * r) / (1 + sp.exp(beta * r))) == 0


@pytest.mark.parametrize("beta", BETAS)
def test_round_trip_single_item(beta):
    """One item: the weight and log-ratio read back from its loss equal theory's, down to R = -100/beta."""
    r = np.linspace(-100 / beta, 4.0, 401)
    losses = np.array([ob.npo_loss(np.array([x]), np.array([0.0]), beta) for x in r])
    np.testing.assert_allclose(ob.npo_weight_from_loss(losses, beta), ob.npo_weight(r, 0.0, beta),
                               rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(ob.npo_log_ratio_from_loss(losses, beta), r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("beta", BETAS)
def test_batch_mean_loss_bounds_the_mean_weight_and_ratio(beta):
    """A batch's mean loss gives upper bounds on its mean weight and mean log-ratio (concavity)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = rng.normal(-5 / beta, 4 / beta, size=4)
        loss = ob.npo_loss(r, np.zeros(4), beta)
        assert ob.npo_weight_from_loss(loss, beta) >= ob.npo_weight(r, 0.0, beta).mean() - 1e-12
        assert ob.npo_log_ratio_from_loss(loss, beta) >= r.mean() - 1e-9


def test_beta_must_be_positive():
    with pytest.raises(ValueError):
        ob.npo_weight_from_loss(1.0, 0.0)


def _write(root, runs, tag="", grad_norms=None):
    """runs: (task, method, beta, per-epoch log-ratio list, per-epoch MU list); 2 steps an epoch,
    with ``grad_norms`` (per epoch: the two steps' norms) logged when given."""
    entries = []
    for task, method, beta, ratios, mus in runs:
        run_id = f"{task}-{method.lower()}-b{beta:g}-s0" + ("-noclip" if tag == "no_clip" else "")
        rows = [{"event": "meta", "id": run_id, "task": task, "method": method, "seed": 0,
                 "knobs": {"beta": beta, "rt_weight": 0.0}, "tag": tag, "steps_per_epoch": 2}]
        for e, ratio in enumerate(ratios, 1):
            for k in (1, 2):
                loss = float(ob.npo_loss(np.array([ratio]), np.array([0.0]), beta)) \
                    if method == "NPO" else -1.0 * e
                rows.append({"event": "train", "step": 2 * (e - 1) + k, "epoch": e - 1 + k / 2,
                             "forget_loss": loss, "loss": loss,
                             **({"grad_norm": grad_norms[e - 1][k - 1]} if grad_norms else {})})
        for e, mu in enumerate(mus):
            rows.append({"event": "eval", "step": 2 * e, "epoch": float(e),
                         "summary": {tr.FQ: 0.5, tr.MU: mu}, "kl": {}, "samples": []})
        (root / "runs").mkdir(parents=True, exist_ok=True)
        (root / "runs" / f"{run_id}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        entries.append({"id": run_id, "log": f"runs/{run_id}.jsonl"})
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "preset": "synthetic", "device": "test",
                                                    "runs": entries}))
    return root


def test_weight_by_epoch_recovers_the_logged_ratios(tmp_path):
    ratios = [-0.5, -8.0, -30.0]
    root = _write(tmp_path, [("forget10", "NPO", 0.1, ratios, [0.8, 0.8, 0.7, 0.1])])
    (run,) = tr.load_results(root)
    got = tr.npo_weight_by_epoch(run)
    assert got["epochs"] == [1, 2, 3]
    np.testing.assert_allclose(got["log_ratio"], ratios, rtol=1e-9)
    np.testing.assert_allclose(got["weight"], ob.npo_weight(np.array(ratios), 0.0, 0.1), rtol=1e-9)


def test_claims_weights_table_and_json(tmp_path, capsys):
    root = _write(tmp_path, [("forget10", "GA", 0.1, [0, 0], [0.8, 0.5, 0.0]),
                             ("forget10", "NPO", 0.1, [-1.0, -40.0], [0.8, 0.6, 0.3]),
                             ("forget10", "NPO", 1.0, [-1.0, -12.0], [0.8, 0.8, 0.8])])
    assert tofu_claims.main(["--from-results", str(root), "--weights"]) == 0
    out = capsys.readouterr().out
    assert "| forget10 | GA | MU | 0.8 | 0.5 | 0 |" in out
    assert "| forget10 | NPO β=0.1 | R ≤ (nats) | – | -1 | -40 |" in out
    assert "| forget10 | NPO β=1 | MU | 0.8 | 0.8 | 0.8 |" in out
    assert tofu_claims.main(["--from-results", str(root), "--weights", "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text   # strict JSON
    rows = json.loads(text)
    w = next(r for r in rows if r["method"] == "NPO β=1" and r["quantity"] == "W ≤")
    assert w["values"][2] == pytest.approx(2 / (1 + np.exp(12.0)), rel=1e-9)


def test_claims_weights_keeps_the_clipping_ablation_apart_with_grad_norms(tmp_path, capsys):
    """Runs tagged no_clip get rows of their own ("GA no clip", "NPO β=0.1 no clip"), and every
    group its per-epoch median gradient norm."""
    plain = [("forget10", "GA", 0.1, [0, 0], [0.8, 0.5, 0.0]), ("forget10", "NPO", 0.1, [-1.0, -40.0], [0.8, 0.6, 0.3])]
    _write(tmp_path, plain, grad_norms=[[1.0, 3.0], [10.0, 30.0]])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    _write(tmp_path, [(t, m, b, r, [mu * 0.5 for mu in mus]) for t, m, b, r, mus in plain], tag="no_clip",
           grad_norms=[[5.0, 7.0], [50.0, 70.0]])
    manifest["runs"] += json.loads((tmp_path / "manifest.json").read_text())["runs"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    rows = {(r["method"], r["quantity"]): r["values"] for r in tofu_claims.weight_rows(tr.load_results(tmp_path))}
    assert rows[("GA", "MU")] == [0.8, 0.5, 0.0] and rows[("GA no clip", "MU")] == [0.4, 0.25, 0.0]
    assert rows[("GA", "‖∇‖ median")] == [None, 2.0, 20.0]
    assert rows[("NPO β=0.1 no clip", "‖∇‖ median")] == [None, 6.0, 60.0]
    assert rows[("NPO β=0.1 no clip", "R ≤ (nats)")][1:] == pytest.approx([-1.0, -40.0], rel=1e-9)
    assert ("GA no clip", "W ≤") not in rows


def test_claims_weights_without_npo_runs_is_one_line(tmp_path, capsys):
    root = _write(tmp_path, [("forget10", "GA", 0.1, [0], [0.8, 0.5])])
    assert tofu_claims.main(["--from-results", str(root), "--weights"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--methods GA NPO" in err


def test_claims_on_an_ablation_only_folder_is_one_line(tmp_path, capsys):
    _write(tmp_path, [("forget10", "GA", 0.1, [0], [0.8, 0.5])], tag="no_clip")
    assert tofu_claims.main(["--from-results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weights" in err
