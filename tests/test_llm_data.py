"""llm.data.tofu, llm.data.formatting, llm.models: TOFU splits, layouts, validation, labels, log-probs."""
from __future__ import annotations

import json

import pytest
import torch

from llm.data.tofu import DataError, QA_PER_AUTHOR, TOFU_SPLITS, load_idk, load_split, split_fields
from tofu_fixture import hub_layout_cache
from llm.data.formatting import IGNORE_INDEX, collate, encode_prompt, encode_qa, format_prompt
from llm.models import (ModelError, build_tokenizer, count_parameters, load_model_and_tokenizer,
                        sequence_logprob, token_counts)

SIZES = {"full": 4000, "forget01": 40, "forget05": 200, "forget10": 400, "retain90": 3600,
         "retain95": 3800, "retain99": 3960, "forget01_perturbed": 40, "forget05_perturbed": 200,
         "forget10_perturbed": 400, "retain_perturbed": 400, "real_authors": 100,
         "real_authors_perturbed": 100, "world_facts": 117, "world_facts_perturbed": 117,
         "holdout01": 40, "holdout05": 200, "holdout10": 400, "idontknow": 100}


@pytest.fixture(scope="module")
def tok(tofu_dir):
    return build_tokenizer(tofu_dir, vocab_size=2048)


@pytest.fixture(params=["fixture", "real"])
def any_tofu(request):
    """The generated fixture, and the real files when $TOFU_DATA_DIR is set."""
    if request.param == "fixture":
        return request.getfixturevalue("tofu_dir")
    from conftest import real_tofu
    return real_tofu("checks the real TOFU files' fields and that forgetNN/retainNN files equal "
                     "the splits derived from full.json")


def test_every_split_loads_with_its_fields(any_tofu):
    for name in TOFU_SPLITS:
        rows = load_split(name, any_tofu)
        assert rows, name
        for f in split_fields(name):
            assert all(f in r for r in rows), (name, f)
        assert not any("__where__" in r for r in rows)
    for name in ("forget01_perturbed", "forget10_perturbed", "retain_perturbed"):
        assert all(len(r["perturbed_answer"]) == 5 for r in load_split(name, any_tofu))


def test_real_split_sizes():
    from conftest import real_tofu
    root = real_tofu("checks the real split sizes (full 4000, forget01 40, forget05 200, forget10 400, ...)")
    assert set(SIZES) == set(TOFU_SPLITS)
    for name in TOFU_SPLITS:
        assert len(load_split(name, root)) == SIZES[name], name


def test_forget_percentages_are_last_authors_of_full(any_tofu, tmp_path):
    full = load_split("full", any_tofu)
    authors = len(full) // QA_PER_AUTHOR
    # A copy holding only full.json: every split must be derived, and agree with the files.
    (tmp_path / "full.json").write_text((any_tofu / "full.json").read_text())
    for pct in (1, 5, 10):
        assert load_split(f"forget{pct:02d}", tmp_path) == load_split(f"forget{pct:02d}", any_tofu)
        assert load_split(f"retain{100 - pct}", tmp_path) == load_split(f"retain{100 - pct}", any_tofu)
        pert = load_split(f"forget{pct:02d}_perturbed", any_tofu)
        assert [r["question"] for r in pert] == [r["question"] for r in load_split(f"forget{pct:02d}", tmp_path)]
    for pct in (20, 30, 50, 90):
        forget, retain = load_split(f"forget{pct}", tmp_path), load_split(f"retain{100 - pct}", tmp_path)
        k = authors * pct // 100
        assert len(forget) == k * QA_PER_AUTHOR and forget == full[len(full) - len(forget):]
        assert retain + forget == full


def test_env_var_locates_the_data(tofu_dir, monkeypatch):
    monkeypatch.setenv("TOFU_DATA_DIR", str(tofu_dir))
    assert len(load_split("forget01")) == 40


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """Point huggingface_hub (already imported, so its constant, not the env var) at ``tmp_path``."""
    import huggingface_hub.constants as constants
    monkeypatch.delenv("TOFU_DATA_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_cache_is_read_offline_per_split_file(tofu_dir, hub_cache):
    hub_layout_cache(tofu_dir, hub_cache)
    assert load_split("forget01") == load_split("forget01", tofu_dir)
    assert load_split("forget20") == load_split("forget20", tofu_dir)   # derived from the hub's full
    assert load_split("real_authors_perturbed") == load_split("real_authors_perturbed", tofu_dir)
    assert load_split("idontknow") == load_idk()                        # not on the hub: packaged
    from llm.data.tofu import hub_data_dir
    assert (hub_data_dir() / "full.json").read_bytes() == (tofu_dir / "full.json").read_bytes()


def test_no_data_anywhere_is_one_line_naming_every_fix(hub_cache):
    with pytest.raises(DataError) as e:
        load_split("full")
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("--data-dir", "TOFU_DATA_DIR", "hf download locuslab/TOFU --repo-type dataset"):
        assert needle in msg


def test_idk_answers_packaged_data_dir_or_file(tofu_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TOFU_DATA_DIR", raising=False)
    packaged = load_idk()
    assert len(packaged) >= 20 and all(r["answer"].strip() for r in packaged)
    assert load_split("idontknow", tofu_dir) == packaged          # the fixture has no idontknow.jsonl
    (tmp_path / "idontknow.jsonl").write_text("Beats me.\n\n\"No clue.\"\n")
    assert [r["answer"] for r in load_split("idontknow", tmp_path)] == ["Beats me.", "No clue."]
    mine = tmp_path / "mine.txt"
    mine.write_text("Pass.\n")
    assert load_idk(mine, tofu_dir) == [{"answer": "Pass."}]
    with pytest.raises(DataError, match="--idk-file"):
        load_idk(tmp_path / "nope.txt")


RECORDS = [{"question": f"q{i}?", "answer": f"a{i}."} for i in range(5)]


@pytest.mark.parametrize("layout", ["jsonl", "array", "pretty_array", "line_arrays"])
def test_layouts(tmp_path, layout):
    text = {"jsonl": "\n".join(json.dumps(r) for r in RECORDS),
            "array": json.dumps(RECORDS),
            "pretty_array": json.dumps(RECORDS, indent=2),
            "line_arrays": json.dumps(RECORDS[:2]) + "\n" + json.dumps(RECORDS[2:]) + "\n"}[layout]
    (tmp_path / "holdout01.json").write_text(text)
    assert load_split("holdout01", tmp_path) == RECORDS


def test_malformed_line_and_bad_field_name_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in RECORDS]
    lines[3] = lines[3][:-3]
    (tmp_path / "holdout01.json").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"holdout01\.json:4: malformed JSON"):
        load_split("holdout01", tmp_path)
    lines = [json.dumps(r) for r in RECORDS]
    lines[2] = json.dumps({"question": "q?"})
    (tmp_path / "holdout05.json").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"holdout05\.json:3: field 'answer' is missing"):
        load_split("holdout05", tmp_path)
    (tmp_path / "holdout10.json").write_text(json.dumps([RECORDS[0], {"question": "q", "answer": 3}]))
    with pytest.raises(DataError, match=r"holdout10\.json record 1: field 'answer' is int"):
        load_split("holdout10", tmp_path)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match=r"world_facts\.json not found.*--data-dir"):
        load_split("world_facts", tmp_path)
    with pytest.raises(DataError, match="unknown TOFU split"):
        load_split("forgot10", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_split("full", tmp_path / "nope")


def _hand_labels(tok, q, a, template):
    """Independent reference, open-unlearning's rule (src/data/utils.py::preprocess_chat_instance):
    the first len(tok(prompt)) positions of tok(prompt + answer) are unlabelled whatever they hold;
    the rest plus an appended EOS are labels."""
    if template == "chat":
        user = [{"role": "user", "content": q}]
        prompt_ids = tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True)["input_ids"]
        ids = tok.apply_chat_template(user + [{"role": "assistant", "content": a}],
                                      tokenize=True)["input_ids"]
    else:
        prompt = format_prompt(tok, q, template)
        prompt_ids = tok(prompt)["input_ids"]
        ids = tok(prompt + a)["input_ids"]
    if ids[-1] != tok.eos_token_id:
        ids = ids + [tok.eos_token_id]
    return ids, [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]


@pytest.mark.parametrize("template", ["llama2", "qa", "chat"])
def test_labels_cover_answer_and_eos_only(tofu_dir, tok, template):
    for r in load_split("forget01", tofu_dir)[:10]:
        enc = encode_qa(tok, r["question"], r["answer"], template)
        assert (enc["input_ids"], enc["labels"]) == _hand_labels(tok, r["question"], r["answer"], template)
        answer_ids = [t for t in enc["labels"] if t != IGNORE_INDEX]
        assert answer_ids[-1] == tok.eos_token_id
        if template != "qa":  # qa: the answer's first token is inside the prompt (next test)
            assert tok.decode(answer_ids[:-1]).strip() == r["answer"]
        prompt = encode_prompt(tok, r["question"], template)  # generation input = unlabelled prefix
        assert enc["labels"][len(prompt) - 1] == IGNORE_INDEX != enc["labels"][len(prompt)]
        if template != "qa":
            assert enc["input_ids"][:len(prompt)] == prompt
    assert format_prompt(tok, "Q", "llama2") == "[INST] Q [/INST]"
    assert format_prompt(tok, "Q", "qa") == "Question: Q\nAnswer: "


def test_qa_template_scores_the_tokens_open_unlearning_scores(tofu_dir, tok):
    """"Answer: " + "The ...": jointly tokenized, the prompt's trailing space merges into " The",
    which open-unlearning leaves inside the prompt. Scored per item: the answer's tokens after a
    space, minus that first one, plus EOS; the generation prompt keeps the lone space token."""
    for r in load_split("forget01", tofu_dir):
        enc = encode_qa(tok, r["question"], r["answer"], "qa")
        scored = [t for t in enc["labels"] if t != IGNORE_INDEX]
        after_space = tok(" " + r["answer"], add_special_tokens=False)["input_ids"]
        assert len(scored) == len(after_space)  # (len - 1 merged into the prompt) + 1 EOS
        assert scored[:-1] == after_space[1:] and scored[-1] == tok.eos_token_id
        prompt = encode_prompt(tok, r["question"], "qa")
        assert tok.decode(prompt[-1:]) == " " and len(prompt) == len(enc["input_ids"]) - len(scored)


def test_collate_masks_from_lengths_not_pad_ids():
    eos = 2
    rows = [{"input_ids": [1, 5, eos, 6, eos], "labels": [-100, -100, -100, 6, eos]},  # EOS inside
            {"input_ids": [1, 7, eos], "labels": [-100, 7, eos]}]
    b = collate(rows, pad_id=eos)
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b["labels"].tolist()[1] == [-100, 7, eos, -100, -100]
    left = collate(rows, pad_id=eos, side="left")
    assert left["attention_mask"].tolist()[1] == [0, 0, 1, 1, 1]
    assert left["input_ids"].tolist()[1] == [eos, eos, 1, 7, eos]


def test_encoding_errors(tok):
    with pytest.raises(DataError, match="max_length"):
        encode_qa(tok, "q " * 50, "a " * 50, "llama2", max_length=20)
    import copy
    broken = copy.deepcopy(tok)
    broken.eos_token = None
    with pytest.raises(DataError, match="no EOS"):
        encode_qa(broken, "q", "a", "llama2")
    with pytest.raises(DataError, match="unknown template"):
        encode_qa(tok, "q", "a", "alpaca")


def test_sequence_logprob_matches_hand_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[:, :3] = IGNORE_INDEX
    labels[1, 5:] = IGNORE_INDEX
    expected, counts = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.long)
    for b in range(3):
        for t in range(1, 7):  # token t is predicted from position t - 1
            if labels[b, t] != IGNORE_INDEX:
                expected[b] += torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
                counts[b] += 1
    torch.testing.assert_close(sequence_logprob(logits, labels), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sequence_logprob(logits.float(), labels), expected.float())
    assert token_counts(labels).tolist() == counts.tolist()


def test_tokenizer_is_deterministic_and_presets_have_sizes(tofu_dir, tok):
    from llm.models import _trained_tokenizer_json
    _trained_tokenizer_json.cache_clear()
    again = build_tokenizer(tofu_dir, vocab_size=2048)
    assert again.get_vocab() == tok.get_vocab()
    model, t = load_model_and_tokenizer("tiny", data_dir=tofu_dir)
    assert 0.8e6 < count_parameters(model) < 1.3e6
    assert t.eos_token_id is not None and t.pad_token_id is not None
    model2, _ = load_model_and_tokenizer("tiny", data_dir=tofu_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_checkpoint_roundtrip_and_model_errors(tofu_dir, tmp_path):
    model, t = load_model_and_tokenizer("tiny", data_dir=tofu_dir)
    model.save_pretrained(tmp_path / "ckpt")
    t.save_pretrained(tmp_path / "ckpt")
    model2, t2 = load_model_and_tokenizer(str(tmp_path / "ckpt"))
    assert t2.get_vocab() == t.get_vocab() and t2.eos_token_id == t.eos_token_id
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    with pytest.raises(ModelError, match="preset"):
        load_model_and_tokenizer("no-such-model")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    import importlib.util
    if importlib.util.find_spec("gguf") is None:
        with pytest.raises(ModelError, match="pip install gguf") as e:
            load_model_and_tokenizer(str(tmp_path / "m.gguf"))
        assert "\n" not in str(e.value)


def test_a_missing_local_model_path_fails_at_once_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("runs/missing", "./missing", str(tmp_path / "gone"), "~/surely-not-here-npo"):
        with pytest.raises(ModelError, match="not found") as e:
            load_model_and_tokenizer(spec)
        assert spec in str(e.value) and "\n" not in str(e.value)
