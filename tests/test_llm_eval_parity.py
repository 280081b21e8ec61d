"""--metrics {paper,ou,all}, --numerics {exact,ou}, --from-logs's one rule, privleak through logs
(llm/evaluate/summary.py, llm/evaluate/logs.py, llm/evaluate/scoring.py, llm/evaluate/cli.py with llm/evaluate/mia.py, llm/evaluate/membership.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llm.evaluate import logs as eval_logs, mia
from llm.evaluate import cli as ev
from llm.evaluate.scoring import evaluate_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = dict(forget="forget01", ds_size=6, max_new_tokens=6, batch_size=16)


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    from llm.models import load_model_and_tokenizer
    return load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=5)


@pytest.fixture(scope="module")
def collapsed(tofu_dir):
    """A toy model whose answer probabilities fall far below 1e-10, as after gradient ascent: a
    tiny Llama whose output head puts +60 on the padding token, so every answer token costs ~60
    nats while right and wrong answers stay about as likely as each other."""
    from llm.models import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=6)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tok.pad_token_id] = 60.0
    model.lm_head = head
    return model, tok


@pytest.fixture(scope="module")
def all_exact(tiny, tofu_dir):
    model, tok = tiny
    return evaluate_model(model, tok, data_dir=tofu_dir, metric_set="all", **FAST)


def _close(a, b, rel=1e-9) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (str, type(None))):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


def _finite(x):
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    return x is None or isinstance(x, str) or math.isfinite(x)


def test_metrics_all_adds_mia_privleak_rouge_variants_in_open_unlearnings_layout(all_exact, tiny, tofu_dir):
    s, log = all_exact["summary"], all_exact["per_item"]
    assert set(s["mia_auc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    assert all(0.0 <= v <= 1.0 for v in s["mia_auc"].values())
    assert 0.0 <= s["extraction_strength"] <= 1.0
    # no retain log given: against open-unlearning's reference AUC 0.5, recorded as such
    assert s["privleak_reference"] == "default" and s["privleak_reference_auc"] == 0.5
    assert s["privleak"] == pytest.approx(((1 - s["mia_auc"]["min_k"]) - 0.5) / 0.5 * 100)
    for k in ("forget_Q_A_PARA_ROUGE", "forget_Q_A_PARA_ROUGE_F1", "forget_Q_A_PERT_ROUGE",
              "forget_Q_A_PERT_ROUGE_F1"):
        assert 0.0 <= s[k] <= 1.0
    assert s["numerics"] == "exact" and log["eval_info"]["numerics"] == "exact"
    # what open-unlearning's privleak reads from a retain log: mia_min_k's AUC and its items
    entry = log["mia_min_k"]
    assert entry["agg_value"] == entry["auc"] == pytest.approx(s["mia_auc"]["min_k"])
    assert len(entry["forget"]["value_by_index"]) == 40 == len(entry["holdout"]["value_by_index"])
    assert len(log["forget_Q_A_PERT_ROUGE"]["value_by_index"]["0"]["rougeL_recall"]) == 5  # 5 perturbed
    # paper keys unchanged by --metrics all; paper alone adds none of the extras
    model, tok = tiny
    paper = evaluate_model(model, tok, data_dir=tofu_dir, **FAST)["summary"]
    assert not {"mia_auc", "privleak", "extraction_strength"} & set(paper)
    # to float32 rounding: the answers run from their question's KV cache, whose padded width
    # depends on which questions share a batch (the holdout questions join them under "all")
    assert _close(paper, {k: s[k] for k in paper}, rel=1e-5)


def test_privleak_against_a_retain_log(all_exact, tiny, tofu_dir, tmp_path):
    model, tok = tiny
    own = all_exact["per_item"]
    retain = json.loads(json.dumps(own))  # the same model as its own retain reference: no leak
    s = eval_logs.summarize(own, retain, numerics="exact", which="ou")
    assert s["privleak"] == pytest.approx(0.0, abs=1e-6)
    # a retain model at chance (AUC 0.5): privleak = ((1 - AUC) - 0.5) / 0.5 x 100
    half = [0.0] * 20 + [1.0] * 20
    retain["mia_min_k"]["forget"]["value_by_index"] = {str(i): {"score": v} for i, v in enumerate(half)}
    retain["mia_min_k"]["holdout"]["value_by_index"] = {str(i): {"score": v} for i, v in enumerate(half)}
    auc = all_exact["summary"]["mia_auc"]["min_k"]
    s = eval_logs.summarize(own, retain, numerics="exact", which="all")
    assert s["privleak"] == pytest.approx(((1 - auc) - 0.5) / 0.5 * 100)


def test_collapsed_model_exact_vs_ou_by_hand(collapsed, tofu_dir):
    model, tok = collapsed
    exact = evaluate_model(model, tok, data_dir=tofu_dir, metric_set="all", **FAST)
    ou = evaluate_model(model, tok, data_dir=tofu_dir, metric_set="all", numerics="ou", **FAST)
    assert _finite(exact["summary"]) and _finite(ou["summary"])
    items = exact["per_item"]
    ra_c = [v["avg_loss"] for v in items["ra_Q_A_Prob"]["value_by_index"].values()]
    ra_w = [v["avg_loss"] for v in items["ra_Q_A_PERT_Prob"]["value_by_index"].values()]
    assert max(math.exp(-c) for c in ra_c) < 1e-10  # the regime where the guards decide
    # exact: mean max(0, 1 - exp(L_c - mean L_w)); OU: R = exp(-mean L_w) / (exp(-L_c) + 1e-10)
    f32 = lambda x: float(np.float32(x))  # noqa: E731  (OU's float32 losses)
    exact_tr = np.mean([max(0.0, 1 - math.exp(min(c - np.mean(w), 0.0))) for c, w in zip(ra_c, ra_w)])
    ou_r = [math.exp(-np.mean([f32(x) for x in w])) / (math.exp(-f32(c)) + 1e-10) for c, w in zip(ra_c, ra_w)]
    assert exact["summary"]["ra_Truth_Ratio"] == pytest.approx(exact_tr, rel=1e-9)
    assert ou["summary"]["ra_Truth_Ratio"] == pytest.approx(np.mean([max(0.0, 1 - r) for r in ou_r]), rel=1e-6)
    assert ou["summary"]["ra_Truth_Ratio"] > 0.999 and exact["summary"]["ra_Truth_Ratio"] < 0.99
    # normalised probability: exact in log space; OU's P_c / (P_c + sum P_w + 1e-10) with float32 P
    p = lambda x: float(np.exp(-np.float32(x)))  # noqa: E731
    ou_np = np.mean([p(c) / (p(c) + sum(p(x) for x in w) + 1e-10) for c, w in zip(ra_c, ra_w)])
    assert ou["summary"]["ra_Q_A_Prob_normalised"] == pytest.approx(ou_np, abs=1e-12)
    assert exact["summary"]["ra_Q_A_Prob_normalised"] > 1e-3
    # --from-logs on either log, under either numerics, recomputes the same numbers: one rule
    for made in (exact, ou):
        for numerics, want in (("exact", exact), ("ou", ou)):
            again = eval_logs.summarize(made["per_item"], numerics=numerics, which="all")
            assert _close(again, want["summary"]), (numerics, again, want["summary"])


def test_from_logs_prints_disagreements_and_states_the_rule(all_exact, tmp_path, capsys):
    log = json.loads(json.dumps(all_exact["per_item"]))
    log["ra_Truth_Ratio"]["agg_value"] = 0.123  # a stored aggregate that the values do not give
    for v in log["ra_Truth_Ratio"]["value_by_index"].values():
        v["score"] = 5.0  # stored derived values: never used for a number
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(log))
    assert ev.main(["--from-logs", str(path), "--metrics", "all"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ra_Truth_Ratio"] == pytest.approx(all_exact["summary"]["ra_Truth_Ratio"])
    notes = [line for line in err.strip().splitlines() if line != ev.FQ_HINT]  # no retain log: the hint
    assert "ra_Truth_Ratio: stored 0.123" in err and len(notes) == 1
    with pytest.raises(SystemExit):
        ev.main(["--help"])
    assert "recomputed from the log's per-item values" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("case", ["metrics", "numerics", "k_zero", "k_big", "no_holdout",
                                  "retain_without_mia"])
def test_bad_input_one_line_exit_2_nothing_written(case, tofu_dir, tmp_path, capsys, all_exact):
    out = tmp_path / "out"
    argv = ["--model", "tiny", "--forget", "forget01", "--data-dir", str(tofu_dir), "--out", str(out),
            "--metrics", "all"]
    if case == "metrics":
        argv[-1] = "everything"
    elif case == "numerics":
        argv += ["--numerics", "fast"]
    elif case in ("k_zero", "k_big"):
        argv += ["--mia-k", "0" if case == "k_zero" else "1.5"]
    elif case == "no_holdout":
        data = tmp_path / "tofu"
        data.mkdir()
        for f in tofu_dir.iterdir():
            if f.is_file() and not f.name.startswith("holdout"):
                (data / f.name).symlink_to(f)
        argv[argv.index("--data-dir") + 1] = str(data)
    else:
        retain = json.loads(json.dumps(all_exact["per_item"]))
        for key in mia.ATTACKS.values():
            del retain[key]
        (tmp_path / "retain.json").write_text(json.dumps(retain))
        argv += ["--retain-logs", str(tmp_path / "retain.json")]
    assert ev.main(argv) == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{ev.PROG}: error: "), err
    assert {"metrics": "--metrics", "numerics": "--numerics", "k_zero": "(0, 1]", "k_big": "(0, 1]",
            "no_holdout": "holdout01", "retain_without_mia": "mia_min_k"}[case] in err
    assert not out.exists()


def test_pipeline_and_figures_take_numerics(tofu_dir, tmp_path, capsys):
    from figures import fig5_tofu_tradeoff
    from llm.pipeline import cli as pipeline_cli
    from llm.studies import tofu_claims
    from llm.studies import tofu_results as tr
    base = ["--preset", "cpu", "--data-dir", str(tofu_dir)]
    opts = pipeline_cli.build_options(pipeline_cli._parser().parse_args(base + ["--numerics", "ou"]))
    assert opts.preset.numerics == "ou"
    assert pipeline_cli.build_options(pipeline_cli._parser().parse_args(base)).preset.numerics == "exact"
    assert pipeline_cli.main(base + ["--numerics", "fast", "--dry-run"]) == 2
    assert "--numerics" in capsys.readouterr().err
    # the committed CPU results predate the field: exact; a figure asked for ou refuses them
    assert tr.load_results(tr.DEFAULT_RESULTS, "exact")
    with pytest.raises(tr.ResultsError, match="--numerics exact"):
        tr.load_results(tr.DEFAULT_RESULTS, "ou")
    # ... and so do the figure harness and the claims table: one line, exit 2, nothing drawn
    for cli, argv in ((fig5_tofu_tradeoff.main, ["--out", str(tmp_path / "figs")]), (tofu_claims.main, [])):
        assert cli(argv + ["--from-results", str(tr.DEFAULT_RESULTS), "--numerics", "ou"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and "--numerics exact" in err, err
    assert not (tmp_path / "figs").exists()
