"""python -m llm plan: parameter counts from the config alone, sharding arithmetic, the paper's case."""
from __future__ import annotations

import json

import pytest

from llm.memory import Setup, count, main, model_config, plan


@pytest.fixture(scope="module")
def llama7b():
    return count(model_config("llama2-7b"))


def test_llama2_7b_parameter_count_is_the_papers_model(llama7b):
    assert llama7b.params == pytest.approx(6.74e9, rel=0.01)
    assert llama7b.layers == 32 and llama7b.params == llama7b.root + 32 * llama7b.layer


def test_phi_1_5_is_shipped_offline():
    assert count(model_config("phi-1.5")).params == pytest.approx(1.42e9, rel=0.01)


def test_paper_recipe_needs_fsdp_on_two_80gb_gpus(capsys):
    out = {}
    for strategy in ("ddp", "fsdp"):
        assert main(["--model", "llama2-7b", "--gpus", "2", "--gpu-mem", "80", "--strategy", strategy,
                     "--json"]) == 0
        out[strategy] = json.loads(capsys.readouterr().out)
    assert out["ddp"]["fits"] is False and out["fsdp"]["fits"] is True
    for r in out.values():
        assert set(r["per_gpu_gb"]) >= {"params", "grads", "optimizer", "activations", "reference", "total"}
        assert r["params"] == pytest.approx(6.74e9, rel=0.01)
        s = r["setup"]  # the paper's micro-batch, length, precision, checkpointing are the defaults
        assert (s["batch_size"], s["max_length"], s["precision"], s["gradient_checkpointing"]) == \
            (4, 500, "bf16-mixed", True)
    # AdamW's moments: 2 fp32 values per weight, split over the 2 GPUs by fsdp
    assert out["ddp"]["per_gpu_gb"]["optimizer"] == pytest.approx(8 * out["ddp"]["params"] / 1e9)
    assert out["fsdp"]["per_gpu_gb"]["optimizer"] == pytest.approx(out["ddp"]["per_gpu_gb"]["optimizer"] / 2)


def test_parts_respond_to_the_setup(llama7b):
    base = dict(model="llama2-7b", gpus=4, strategy="fsdp")
    gb = lambda **kw: plan(Setup(**{**base, **kw}), llama7b)["per_gpu_gb"]  # noqa: E731
    assert gb()["reference"] == 0                                      # cached reference: no copy
    assert gb(reference="live")["reference"] == pytest.approx(4 * llama7b.params / 4 / 1e9)
    assert gb(method="npo_kl")["reference"] > 0                          # KL methods are live
    assert gb(gradient_checkpointing=False)["activations"] > 5 * gb()["activations"]
    assert gb(method="npo")["activations"] < gb(method="npo_rt")["activations"]  # 1 group vs 2
    assert gb(max_length=1000)["activations"] == pytest.approx(2 * gb()["activations"])
    assert gb(cpu_offload=True)["optimizer"] == 0
    assert gb(gpus=8)["optimizer"] == pytest.approx(gb()["optimizer"] / 2)


def test_counts_match_the_real_models(tofu_dir):
    """Independent checks: the instantiated preset's parameters, and peft's trainable LoRA count."""
    from peft import LoraConfig, get_peft_model
    from llm.models import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer("tiny", data_dir=tofu_dir)
    c = count(model_config("tiny"))
    assert len(tok) == model.config.vocab_size == c.vocab
    assert c.params == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert c.lora == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_checkpoint_folder_is_read_from_its_config(tmp_path):
    from transformers import LlamaConfig
    LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2).save_pretrained(tmp_path)
    c = count(model_config(str(tmp_path)))
    assert c.layers == 2 and c.params == 2 * 100 * 32 + 2 * c.layer + 32


@pytest.mark.parametrize("argv, message", [
    (["--model", "llama-9000"], "unknown model"),
    (["--model", "tiny", "--gpus", "0"], "--gpus must be >= 1"),
    (["--model", "tiny", "--gpu-mem", "0"], "--gpu-mem must be > 0"),
    (["--model", "tiny", "--gpu-mem", "-3"], "--gpu-mem must be > 0"),
    (["--model", "tiny", "--strategy", "zero3"], "ddp or fsdp"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_per_token_inputs_of_the_newer_methods_are_counted(llama7b):
    base = dict(model="llama2-7b", gpus=1, batch_size=4, max_length=500)   # bf16-mixed: 2-byte compute
    gb = lambda **kw: plan(Setup(**{**base, **kw}), llama7b)["per_gpu_gb"]  # noqa: E731
    tokens, vocab = 4 * 500, 32000
    assert gb(method="wga")["reference"] == 0                              # per-token log-probs only
    live = gb(method="npo", reference="live")["reference"]                 # the frozen copy alone
    # UNDIAL: a live reference, plus its logits (bf16), their fp32 copy and the fp32 target
    assert gb(method="undial")["reference"] == pytest.approx(live + tokens * vocab * (2 + 8) / 1e9)
    # CE-U: its fp32 target distribution beside the activations of one group, as NPO's
    assert gb(method="ceu")["activations"] == pytest.approx(gb(method="npo")["activations"] + tokens * vocab * 4 / 1e9)
    assert gb(method="ceu")["reference"] == 0


def test_rmu_counts_a_live_reference_and_its_hidden_states(llama7b):
    base = dict(model="llama2-7b", gpus=1, batch_size=4, max_length=500)
    gb = lambda **kw: plan(Setup(**{**base, **kw}), llama7b)["per_gpu_gb"]  # noqa: E731
    live = gb(method="npo", reference="live")["reference"]
    assert gb(method="rmu")["reference"] == pytest.approx(live + 4 * 500 * 4096 * 2 / 1e9)   # bf16 [B, T, H]
    assert gb(method="rmu")["activations"] == pytest.approx(gb(method="npo_rt")["activations"])  # 2 groups
