"""TOFU evaluation (llm/evaluate/summary.py, llm/evaluate/logs.py, llm/evaluate/scoring.py, llm/evaluate/cli.py, llm/evaluate/generation.py): logs, CLI, a tiny model end to end."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import assert_close
from llm.evaluate import logs as eval_logs, summary as eval_summary, scoring
from llm.evaluate import cli as ev
from llm.evaluate import metrics
from llm.data.formatting import encode_prompt, encode_qa
from llm.evaluate.generation import greedy_generate

LEGACY = "reference_eval_logs/legacy_tofu_llama2-7b/full_wd0.01_eval_log_aggregated.json"


@pytest.fixture(scope="module")
def legacy_path():
    """The authors' published eval log of their Llama-2-7b target (beside the real TOFU files)."""
    from conftest import real_tofu
    return real_tofu("reads the TOFU authors' published Llama-2-7b eval log (Model Utility 0.6227)") / LEGACY


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    from llm.models import load_model_and_tokenizer
    return load_model_and_tokenizer("tiny", data_dir=tofu_dir)


def run_cli(argv, capsys):
    code = ev.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- logs without a model ---------------------------------------------------------------------

def test_legacy_log_reproduces_model_utility_and_self_forget_quality(legacy_path, capsys):
    code, out, err = run_cli(["--from-logs", legacy_path, "--retain-logs", legacy_path], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["model_utility"] == pytest.approx(0.6227, abs=1e-4)
    assert summary["forget_quality"] == 1.0
    for key in eval_summary.UTILITY_KEYS + ("forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE"):
        assert 0.0 < summary[key] <= 1.0, key


def test_legacy_components_match_an_independent_recomputation(legacy_path):
    raw = json.loads(legacy_path.read_text())
    summary = eval_logs.summarize(eval_logs.load_eval_log(legacy_path))
    ra = raw["eval_real_author_wo_options.json"]
    idx = list(ra["avg_gt_loss"])
    p = np.exp(-np.array([ra["avg_gt_loss"][i] for i in idx]))
    w = np.exp(-np.array([ra["average_perturb_loss"][i] for i in idx])).sum(1)
    assert summary["ra_Q_A_Prob_normalised"] == pytest.approx(np.mean(p / (p + w)))
    fg = raw["eval_log_forget.json"]
    r = np.exp(np.array([fg["avg_paraphrased_loss"][i] - np.mean(fg["average_perturb_loss"][i])
                         for i in fg["avg_gt_loss"]]))
    assert summary["forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(r, 1 / r)))
    assert summary["forget_quality"] is None  # no retain reference given


def test_legacy_folder_and_open_unlearning_round_trip(legacy_path, tmp_path):
    raw = json.loads(legacy_path.read_text())
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name, data in raw.items():
        (folder / name).write_text(json.dumps(data))
    reference = eval_logs.summarize(legacy_path)
    assert_close(eval_logs.summarize(folder), reference)
    # converted to open-unlearning's layout, written, read back: same summary
    ou = eval_logs.load_eval_log(legacy_path)
    assert set(eval_summary.UTILITY_KEYS) <= set(ou) and "value_by_index" in ou["forget_truth_ratio"]
    (tmp_path / "ou").mkdir()
    (tmp_path / "ou" / "TOFU_EVAL.json").write_text(json.dumps(ou))
    assert_close(eval_logs.summarize(tmp_path / "ou"), reference)


def test_minimal_open_unlearning_retain_reference(legacy_path, tmp_path):
    """A retain log holding only forget_truth_ratio scores (what open-unlearning's FQ reads)."""
    ours = eval_logs.load_eval_log(legacy_path)
    rng = np.random.default_rng(0)
    scores = rng.lognormal(-0.5, 0.6, size=300)
    retain = {"forget_truth_ratio": {"agg_value": 0.6,
                                     "value_by_index": {str(i): {"score": s} for i, s in enumerate(scores)}}}
    fq = eval_logs.summarize(ours, retain)["forget_quality"]
    own = [v["score"] for v in ours["forget_truth_ratio"]["value_by_index"].values()]
    assert fq == pytest.approx(metrics.forget_quality(np.log(own), np.log(scores)))
    assert 0.0 <= fq < 1.0


def test_ds_size_truncates_both_logs_and_sizes_must_match(legacy_path, capsys):
    code, out, _ = run_cli(["--from-logs", legacy_path, "--retain-logs", legacy_path,
                            "--ds-size", 100], capsys)
    assert code == 0 and json.loads(out)["forget_quality"] == 1.0
    log = eval_logs.load_eval_log(legacy_path)
    first50 = dict(list(log["forget_truth_ratio"]["value_by_index"].items())[:50])
    short = {"forget_truth_ratio": {"agg_value": None, "value_by_index": first50}}
    with pytest.raises(eval_summary.EvalError, match="--ds-size"):
        eval_logs.summarize(log, short)
    assert eval_logs.summarize(log, short, ds_size=50)["forget_quality"] == 1.0


@pytest.mark.parametrize("case", ["missing", "malformed", "not_a_log", "bad_entry", "no_forget",
                                  "ds_size"])
def test_log_errors_are_one_line_exit_2(case, legacy_path, tmp_path, capsys):
    raw = json.loads(legacy_path.read_text())
    bad = tmp_path / "bad.json"
    argv = ["--from-logs", bad]
    if case == "malformed":
        bad.write_text('{"eval_log.json": ')
    elif case == "not_a_log":
        bad.write_text(json.dumps({"hello": 1}))
    elif case == "bad_entry":  # open-unlearning layout with a non-numeric probability
        log = eval_logs.load_eval_log(legacy_path)
        log["retain_Q_A_Prob"]["value_by_index"]["3"] = {"prob": "abc"}
        bad.write_text(json.dumps(log))
    elif case == "no_forget":  # a retain reference without the forget split
        bad.write_text(json.dumps({k: v for k, v in raw.items() if k != "eval_log_forget.json"}))
        argv = ["--from-logs", legacy_path, "--retain-logs", bad]
    elif case == "ds_size":
        argv = ["--from-logs", legacy_path, "--ds-size", 0]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("python -m llm eval: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case != "ds_size":
        assert "bad.json" in err


def test_unknown_forget_split_fails_before_loading_a_model(capsys):
    code, _, err = run_cli(["--model", "no/such-model", "--forget", "forget7"], capsys)
    assert code == 2 and "forget7" in err and err.count("\n") == 1


# ---- scoring and generation on a tiny model ---------------------------------------------------

def test_batched_scoring_equals_one_sequence_at_a_time(tiny):
    model, tok = tiny
    qa = [("Who wrote it?", "A very long answer " * 4), ("Q?", "Short."), ("Where?", "In Paris, France.")]
    encoded = [encode_qa(tok, q, a, "llama2") for q, a in qa]
    batched = scoring.answer_losses(model, encoded, tok.pad_token_id)
    single = scoring.answer_losses(model, encoded, tok.pad_token_id, max_batch_tokens=1)  # 1 row each
    np.testing.assert_allclose(batched, single, rtol=1e-5)

    class NoLogitsToKeep(torch.nn.Module):  # a forward without logits_to_keep: full logits
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, use_cache):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    full = scoring.answer_losses(NoLogitsToKeep(model), encoded, tok.pad_token_id)
    np.testing.assert_allclose(batched, full, rtol=1e-5)
    # and equals the mean token NLL written out directly
    e = encoded[1]
    with torch.no_grad():
        logits = model(torch.tensor([e["input_ids"]])).logits[0, :-1]
    labels = torch.tensor(e["labels"][1:])
    keep = labels != -100
    nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert batched[1] == pytest.approx(float(nll), rel=1e-5)


def test_bf16_scoring_stays_within_its_stated_tolerance(tiny, tofu_dir):
    """--bf16-scoring: the body under bf16 autocast, the head and log-softmax in float32. The
    losses move (autocast is on) but stay within 1 % and every summary number within 5e-3 (measured
    on the README's tiny target, forget10: losses 0.5 %, summary 3.3e-4; docs/results.md)."""
    model, tok = tiny
    plan = scoring.EvalItems(tok, "forget01", tofu_dir, "llama2", 3)
    fp32 = scoring.answer_losses(model, plan.encoded, tok.pad_token_id)
    bf16 = scoring.score_sequences(model, plan.encoded, tok.pad_token_id, bf16=True)[0]
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(bf16, fp32, rtol=1e-2)
    kw = dict(data_dir=tofu_dir, ds_size=3, max_new_tokens=4)
    a = scoring.evaluate_model(model, tok, "forget01", **kw)["summary"]
    b = scoring.evaluate_model(model, tok, "forget01", bf16_scoring=True, **kw)["summary"]
    for k, v in a.items():
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, abs=5e-3), k


def test_batched_generation_matches_unbatched(tiny):
    model, tok = tiny
    prompts = [encode_prompt(tok, q, "llama2") for q in
               ["Who?", "Which author from Kuwait City wrote novels about the desert?", "Where is it?"]]
    batched = greedy_generate(model, tok, prompts, batch_size=3, max_new_tokens=6)
    single = [greedy_generate(model, tok, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert batched == single and all(batched)


def test_generation_stops_each_row_at_eos(tiny):
    """Logits forced per step: row 0 says A B then EOS, row 1 says A then EOS. Row 1 leaves the
    batch once it has stopped: the third forward computes one row only."""
    model, tok = tiny
    a, b = tok("Hello world", add_special_tokens=False)["input_ids"][:2]
    eos = tok.eos_token_id
    steps = [[a, a], [b, eos], [eos]]  # the token each row still in the batch emits, per forward
    calls = []

    def force(module, inputs, logits):
        step = len(calls)
        calls.append(logits.shape[0])
        logits = logits.clone()
        logits[:, -1, :] = -1e4
        for row, t in enumerate(steps[step] if step < len(steps) else [b] * logits.shape[0]):
            logits[row, -1, t] = 1e4
        return logits

    prompt = encode_prompt(tok, "Who?", "llama2")
    handle = model.lm_head.register_forward_hook(force)
    try:
        texts = greedy_generate(model, tok, [prompt, prompt], batch_size=2, max_new_tokens=40)
    finally:
        handle.remove()
    assert texts == [tok.decode([a, b]).strip(), tok.decode([a]).strip()]
    assert calls == [2, 2, 1]  # rows per forward: the finished row was dropped, then all stopped



@pytest.mark.parametrize("compact_at", [0.0, 0.5, 1.0])
def test_when_finished_rows_leave_the_batch_changes_no_output(tiny, monkeypatch, compact_at):
    """Rows that stop at different steps: whether a finished row leaves at once (0), once half the
    batch has finished (0.5) or only when all have (1.0), every row's tokens are the ones it gets
    alone, cut at its own stop; rows leave the batch exactly when the rule says."""
    from llm.data.formatting import collate
    from llm.evaluate import generation
    model, tok = tiny
    prompts = [encode_prompt(tok, q, "llama2") for q in ["Who?", "Where is it?", "Why?", "When?"]]
    batch = collate([{"input_ids": p} for p in prompts], tok.pad_token_id, side="left")
    free = generation._greedy_batch(model, batch["input_ids"], batch["attention_mask"], 12, torch.tensor([-1]))

    def lengths(stops):  # each row's output length under a stop set: up to its first stop, or 12
        return [next((k + 1 for k, t in enumerate(row) if t in stops), 12) for row in free]
    # a stop set of three of the emitted tokens under which the rows stop at the most distinct steps
    stops = max(itertools.combinations(sorted({t for row in free for t in row}), 3),
                key=lambda c: len(set(lengths(c))))
    stop_t = torch.tensor(stops)
    alone = [generation._greedy_batch(model, batch["input_ids"][i:i + 1], batch["attention_mask"][i:i + 1], 12, stop_t)[0]
             for i in range(len(prompts))]
    assert len({len(a) for a in alone}) > 1  # the rows do stop at different steps

    rows_per_forward = []
    handle = model.lm_head.register_forward_hook(lambda m, i, out: rows_per_forward.append(out.shape[0]))
    monkeypatch.setattr(generation, "COMPACT_AT", compact_at)
    try:
        out = generation._greedy_batch(model, batch["input_ids"], batch["attention_mask"], 12, stop_t)
    finally:
        handle.remove()
    assert out == alone
    if compact_at == 1.0:
        assert set(rows_per_forward) == {len(prompts)}
    elif compact_at == 0.0:
        finished_before = [sum(len(a) <= step for a in alone) for step in range(len(rows_per_forward))]
        assert rows_per_forward == [len(prompts) - f for f in finished_before]


# ---- evaluate_model against a second, plain implementation -----------------------------------
# The model is the tiny preset plus a fixed bigram bias on its logits ("after token t, strongly
# prefer token n(t)"), built from one scripted sentence: greedy decoding then writes that sentence,
# so the ROUGE terms (and with them Model Utility) are non-zero and known, and the answers that
# share its bigrams get high, item-dependent probabilities. The reference below scores each
# sequence alone, generates token by token without a KV cache, and aggregates with the formulas of
# tofu-notes 3.2-3.6 written out here; it shares no code with llm.evaluate.cli or llm.evaluate.metrics.

EVAL_SETS = ("forget01_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")


def _script(tofu_dir) -> str:
    """The scripted answer: the first word of each eval set's first answer, so that every set's
    ROUGE (and with it Model Utility) is non-zero on any TOFU-shaped data. Words are joined by
    distinct punctuation, not spaces: a repeated token would make the bigram chain loop."""
    words = []
    for split in EVAL_SETS:
        first = json.loads((tofu_dir / f"{split}.json").read_text().splitlines()[0])["answer"].split()[0]
        if first not in words:
            words.append(first)
    return "".join(w + sep for w, sep in zip(words, ",;:/"))
BIAS = 20.0


def _bigram_model(model, tok, script: str, also: str):
    """Bias the logits towards ``script`` after the prompt, and towards the bigrams of ``also``."""
    prompt = tok("[INST] Who? [/INST]")["input_ids"]
    chain = tok("[INST] Who? [/INST]" + script)["input_ids"][len(prompt) - 1:] + [tok.eos_token_id]
    assert len(set(chain)) == len(chain), "the scripted chain repeats a token and would loop"
    also_ids = tok(also, add_special_tokens=False)["input_ids"]
    nxt = {}
    for a, b in [*zip(chain, chain[1:]), *zip(also_ids, also_ids[1:])]:
        nxt.setdefault(a, b)
    table = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    for a, b in nxt.items():
        table[a] = b

    return _with_bigram_head(model, table)


class _TokenNorm(torch.nn.Module):
    """The final norm, with each position's input token id appended as one more feature, so that
    the head sees it at every row it is given (all positions, the last k, or gathered rows)."""

    def __init__(self, norm, ids):
        super().__init__()
        self.norm, self.ids = norm, ids

    def forward(self, hidden):
        return torch.cat([self.norm(hidden), self.ids["now"].to(hidden.dtype)[..., None]], -1)


class _BigramHead(torch.nn.Module):
    """The output head plus BIAS on the logit of ``table[previous token]`` (where >= 0)."""

    def __init__(self, head, table):
        super().__init__()
        self.head, self.table = head, table
        self.weight = head.weight

    def forward(self, x):
        logits = self.head(x[..., :-1]).clone()
        target = self.table[x[..., -1].long()]
        hit = target >= 0
        logits[hit, target[hit]] += BIAS
        return logits


class _Restore:
    def __init__(self, undo):
        self.remove = undo


def _with_bigram_head(model, table):
    """Put the bigram bias into the model itself: whatever positions its forward projects (full
    logits, ``logits_to_keep``, the answer-only gather of ``llm.models.logits_at``, a KV-cached
    generation step), each row gets the bias of its own input token."""
    ids = {}
    grab = model.model.embed_tokens.register_forward_pre_hook(lambda m, a: ids.update(now=a[0]))
    norm, head = model.model.norm, model.lm_head
    model.model.norm, model.lm_head = _TokenNorm(norm, ids), _BigramHead(head, table)

    def undo():
        grab.remove()
        model.model.norm, model.lm_head = norm, head

    return _Restore(undo)


def _reference_eval(model, tok, tofu_dir, ds_size, max_new_tokens, retain_ratio=None):
    from rouge_score import rouge_scorer
    from scipy import stats

    def rows(split):
        lines = (tofu_dir / f"{split}.json").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()][:ds_size]

    eos = tok.eos_token_id

    @torch.no_grad()
    def mean_nll(q, a):  # mean token NLL of answer + EOS given "[INST] q [/INST]", one sequence
        prompt = tok(f"[INST] {q} [/INST]")["input_ids"]
        ids = tok(f"[INST] {q} [/INST]" + a)["input_ids"] + [eos]
        assert ids[:len(prompt)] == prompt  # no token straddles the prompt/answer border here
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        return -float(np.mean([logp[t - 1, ids[t]] for t in range(len(prompt), len(ids))]))

    @torch.no_grad()
    def generate(q):
        ids = tok(f"[INST] {q} [/INST]")["input_ids"]
        new = []
        for _ in range(max_new_tokens):
            t = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if t == eos:
                break
            new.append(t)
        return tok.decode(new, skip_special_tokens=True).strip()

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out, per_item = {}, {}
    for task, split, para in [("forget", "forget01_perturbed", True), ("retain", "retain_perturbed", True),
                              ("ra", "real_authors_perturbed", False),
                              ("wf", "world_facts_perturbed", False)]:
        items = rows(split)
        gt = np.array([mean_nll(r["question"], r["answer"]) for r in items])
        pert = [np.array([mean_nll(r["question"], w) for w in r["perturbed_answer"]]) for r in items]
        correct = np.array([mean_nll(r["question"], r["paraphrased_answer"]) for r in items]) if para else gt
        ratio = np.exp(correct - np.array([w.mean() for w in pert]))  # wrong / correct, geometric
        rouge = np.array([scorer.score(r["answer"], generate(r["question"]))["rougeL"].recall
                          for r in items])
        p = np.exp(-gt)
        per_item[task] = {"prob": p, "ratio": ratio, "rouge": rouge}
        out[f"{task}_Q_A_ROUGE"] = rouge.mean()
        if para:
            out[f"{task}_Q_A_Prob"] = p.mean()
        else:
            out[f"{task}_Q_A_Prob_normalised"] = np.mean(p / (p + np.array([np.exp(-w).sum() for w in pert])))
        if task == "forget":
            out["forget_truth_ratio"] = np.mean(np.minimum(ratio, 1 / ratio))
        else:
            out[f"{task}_Truth_Ratio" if task != "retain" else "retain_Truth_Ratio"] = \
                np.mean(np.maximum(0.0, 1 - ratio))
    out["model_utility"] = stats.hmean([out[k] for k in eval_summary.UTILITY_KEYS])
    if retain_ratio is not None:
        out["forget_quality"] = stats.ks_2samp(per_item["forget"]["ratio"], retain_ratio).pvalue
    return out, per_item


def test_evaluate_model_matches_an_independent_implementation(tiny, tofu_dir, tmp_path):
    model, tok = tiny
    ds_size, max_new = 4, 12
    # the retain reference: a differently seeded tiny model, evaluated by both implementations
    from llm.models import load_model_and_tokenizer
    other, other_tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir, seed=7)
    retain = scoring.evaluate_model(other, other_tok, "forget01", data_dir=tofu_dir, ds_size=ds_size,
                                    max_new_tokens=2)
    assert retain["summary"]["forget_quality"] is None
    retain_path = eval_logs.write_eval(tmp_path / "retain", retain)[0]
    other.eval()
    _, retain_items = _reference_eval(other, other_tok, tofu_dir, ds_size, 2)
    # the second item's paraphrase: a retain item the model prefers over its perturbations
    retain_row = json.loads((tofu_dir / "retain_perturbed.json").read_text().splitlines()[1])
    handle = _bigram_model(model, tok, _script(tofu_dir), retain_row["paraphrased_answer"])
    try:
        model.train()
        result = scoring.evaluate_model(model, tok, "forget01", data_dir=tofu_dir, ds_size=ds_size,
                                        max_new_tokens=max_new, retain_logs=retain_path,
                                        max_batch_tokens=400)
        assert model.training  # the caller's mode is restored
        model.eval()
        expected, per_item = _reference_eval(model, tok, tofu_dir, ds_size, max_new,
                                             retain_items["forget"]["ratio"])
    finally:
        handle.remove()
        model.train(False)
    s, log = result["summary"], result["per_item"]
    # the scripted generation overlaps some answers of every task, so no MU component is 0 and
    # Model Utility is a real harmonic mean; forget quality is a p-value strictly below 1
    assert min(expected[k] for k in eval_summary.UTILITY_KEYS) > 0.0, {k: float(expected[k]) for k in eval_summary.UTILITY_KEYS if expected[k] == 0}
    assert 0.0 < expected["forget_quality"] < 1.0
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key
    # per item: probabilities, truth ratios and ROUGE in the open-unlearning log
    for task, prefix in [("forget", "forget"), ("retain", "retain"), ("ra", "ra"), ("wf", "wf")]:
        tr_key = "forget_truth_ratio" if task == "forget" else f"{prefix}_Truth_Ratio"
        got = log[tr_key]["value_by_index"]
        np.testing.assert_allclose([got[str(i)]["score"] for i in range(ds_size)],
                                   per_item[task]["ratio"], rtol=1e-4)
        got = log[f"{prefix}_Q_A_Prob"]["value_by_index"]
        np.testing.assert_allclose([got[str(i)]["prob"] for i in range(ds_size)],
                                   per_item[task]["prob"], rtol=1e-4)
        got = log[f"{prefix}_Q_A_ROUGE"]["value_by_index"]
        assert [got[str(i)]["rougeL_recall"] for i in range(ds_size)] == \
            pytest.approx(per_item[task]["rouge"].tolist())
    assert len(log["ra_Q_A_PERT_Prob"]["value_by_index"]["0"]["avg_loss"]) == 3
    assert log["eval_info"]["forget_split"] == "forget01"
    # the per-item log alone reproduces the summary, also after a round trip through the files
    assert_close(eval_logs.summarize(log, retain_path, ds_size=ds_size), s)
    paths = eval_logs.write_eval(tmp_path, result)
    assert json.loads(paths[1].read_text())["model_utility"] == pytest.approx(expected["model_utility"])
    assert_close(eval_logs.summarize(paths[0]), {**s, "forget_quality": None})


def test_from_logs_without_retain_says_how_to_get_forget_quality(tiny, tofu_dir, tmp_path, capsys):
    model, tok = tiny
    result = scoring.evaluate_model(model, tok, "forget01", data_dir=tofu_dir, ds_size=2, max_new_tokens=2)
    path = eval_logs.write_eval(tmp_path, result)[0]
    code, out, err = run_cli(["--from-logs", path], capsys)
    assert code == 0 and json.loads(out)["forget_quality"] is None
    assert "--retain-logs" in err and "TOFU_EVAL.json" in err and "pipeline" in err
    code, out, err = run_cli(["--from-logs", path, "--retain-logs", path], capsys)
    assert code == 0 and json.loads(out)["forget_quality"] == 1.0 and err == ""


@pytest.mark.slow
def test_eval_fn_and_cli_on_a_tiny_model(tiny, tofu_dir, tmp_path, capsys):
    model, tok = tiny
    eval_fn = scoring.make_eval_fn("forget01", data_dir=tofu_dir, ds_size=2, max_new_tokens=2,
                              log_dir=tmp_path / "evals")
    first = eval_fn(model, tok, 0, 0.0)
    assert_close(eval_fn(model, tok, 5, 1.0), first)  # same model, same numbers
    assert (tmp_path / "evals" / "step-000005" / "TOFU_EVAL.json").is_file()
    with pytest.raises(eval_summary.EvalError):
        scoring.make_eval_fn("forget7")
    code, out, err = run_cli(["--model", "tiny", "--forget", "forget01", "--data-dir", tofu_dir,
                              "--ds-size", 2, "--max-new-tokens", 2, "--device", "cpu",
                              "--out", tmp_path / "cli", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model_utility"] == pytest.approx(
        json.loads((tmp_path / "cli" / "TOFU_SUMMARY.json").read_text())["model_utility"])


def test_each_distinct_sequence_is_scored_once(tiny, tofu_dir, monkeypatch):
    """--metrics all: the forget split's QA pairs are eval items (probability, truth ratio) and
    MIA members (LOSS, zlib, Min-K); every distinct question prefix goes through the model exactly
    once, and every distinct sequence's answer exactly once (from that prefix's KV cache)."""
    model, tok = tiny
    monkeypatch.setattr("llm.evaluate.generation.greedy_generate", lambda m, t, prompts, *a: [""] * len(prompts))
    prefixes, answers = [], []

    def count(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        cached = cache is not None and cache.get_seq_length() > 0
        seen = answers if cached else prefixes
        seen.extend(tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask[:, -ids.shape[1]:]))

    def load(split):
        return [json.loads(line) for line in (tofu_dir / f"{split}.json").read_text().splitlines() if line.strip()]

    pairs = set()
    for split in EVAL_SETS:
        for r in load(split)[:3]:
            pairs |= {(r["question"], a) for a in [r["answer"], *r["perturbed_answer"], r.get("paraphrased_answer")] if a}
    members = {(r["question"], r["answer"]) for r in load("forget01")}
    holdout = {(r["question"], r["answer"]) for r in load("holdout01")}
    assert len(members & pairs) == 3  # the overlap this test is about: the first 3 forget items
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        scoring.evaluate_model(model, tok, "forget01", data_dir=tofu_dir, metric_set="all", ds_size=3,
                               max_batch_tokens=2000)
    finally:
        handle.remove()
    assert len(prefixes) == len(set(prefixes)) == len({q for q, _ in pairs | members | holdout})
    assert len(answers) == len(pairs | members | holdout)
