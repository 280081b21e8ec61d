"""open-unlearning's newer objectives (WGA, SatImp, CE-U, UNDIAL, RMU) through the trainer, against
implementations written here from open-unlearning's code (src/trainer/utils.py, src/trainer/unlearn/
{wga,satimp,ceu,undial,rmu}.py), not from theory/objectives.py: every sequence scored alone (no
padding), full-vocabulary logits, plain loops over answer positions. Compared: the logged loss and
the parameters after one plain SGD step (lr 1: the step is -grad), on a ~1M-parameter Llama."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import micro_train_config, save_tiny_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LR = 1.0


@pytest.fixture(scope="module")
def target(tofu_dir, tmp_path_factory):
    return save_tiny_target(tofu_dir, tmp_path_factory.mktemp("target"), seed=1)


# ---- independent implementations ----------------------------------------------------------------

def _positions(row):
    """(t, y_t) for every labelled token t of one encoded row: logits at t - 1 predict y_t."""
    return [(t, row["input_ids"][t]) for t, y in enumerate(row["labels"]) if y != -100]


def _logits(model, row):
    return model(input_ids=torch.tensor([row["input_ids"]])).logits[0].float()


def _token_logps(model, rows):
    """Per row, the list of log pi(y_t | y_<t) of its answer tokens."""
    out = []
    for row in rows:
        logp = torch.log_softmax(_logits(model, row), -1)
        out.append([logp[t - 1, y] for t, y in _positions(row)])
    return out


def _retain_nll(model, rows):
    """GradDiff's retain NLL: HF's mean over every answer token of the micro-batch."""
    flat = [lp for r in _token_logps(model, rows) for lp in r]
    return -sum(flat) / len(flat)


def _wga(model, rows, beta):
    flat = [lp for r in _token_logps(model, rows) for lp in r]
    # compute_wga_loss: -(sg(exp(-CE))^beta * CE).mean() over labelled tokens, CE = -log p
    return -sum(torch.exp(lp.detach()) ** beta * -lp for lp in flat) / len(flat)


def _satimp(model, rows, beta1, beta2):
    flat = [lp for r in _token_logps(model, rows) for lp in r]
    return -sum(torch.exp(lp.detach()) ** beta1 * (1 - torch.exp(lp.detach())) ** beta2 * -lp
                for lp in flat) / len(flat)


def _ceu(model, rows, skip=1):
    """cross_entropy_unlearning_loss with the first ``skip`` answer tokens of each row relabelled -100."""
    terms = []
    for row in rows:
        z = _logits(model, row)
        for k, (t, y) in enumerate(_positions(row)):
            if k < skip:
                continue
            target = z[t - 1].detach().clone()
            target[y] = float("-inf")
            q = torch.softmax(target, -1)
            terms.append(-(q * torch.log_softmax(z[t - 1], -1)).sum())
    return sum(terms) / len(terms)


def _undial(model, ref_model, rows, beta):
    """compute_undial_loss, but over answer positions only (open-unlearning: every position)."""
    terms = []
    for row in rows:
        z = _logits(model, row)
        with torch.no_grad():
            zr = _logits(ref_model, row)
        for t, y in _positions(row):
            pre = zr[t - 1].clone()
            pre[y] -= beta
            terms.append(-(torch.softmax(pre, -1) * torch.log_softmax(z[t - 1], -1)).sum())
    return sum(terms) / len(terms)


def _undial_open_unlearning(model, ref_model, rows, beta, pad_id):
    """open-unlearning's compute_undial_loss verbatim on a right-padded batch: every position enters
    the mean and a -100 label scatters into vocabulary entry V - 100."""
    from torch import nn
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    shift_labels, shift_logits = labels[..., 1:], logits[..., :-1, :]
    with torch.no_grad():
        teacher = ref_model(input_ids=ids, attention_mask=mask).logits.float()[..., :-1, :]
    onehot = torch.zeros_like(teacher)
    onehot[torch.arange(onehot.shape[0]).view(-1, 1, 1), torch.arange(onehot.shape[1]).view(1, -1, 1),
           shift_labels.unsqueeze(-1)] = 1.0
    soft = torch.softmax(teacher - onehot * beta, -1)
    return nn.CrossEntropyLoss(reduction="none")(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                  soft.reshape(-1, soft.size(-1))).mean()


def independent_loss(method, run, items, hp):
    model, ref_model = run.model, run.ref_model
    forget = [run.train[i] for i, _, _, _ in items]
    retain = [run.retain[r] for _, r, _, _ in items] if run.retain else []
    if method == "wga":
        return hp["forget_weight"] * _wga(model, forget, hp["beta"]) + hp["retain_weight"] * _retain_nll(model, retain)
    if method == "satimp":
        return (hp["forget_weight"] * _satimp(model, forget, hp["beta1"], hp["beta2"])
                + hp["retain_weight"] * _retain_nll(model, retain))
    if method == "ceu":
        return hp["forget_weight"] * _ceu(model, forget, hp["ignore_first_n_answer_tokens"])
    if method == "undial":
        return hp["forget_weight"] * _undial(model, ref_model, forget, hp["beta"])
    raise AssertionError(method)


def _grad(loss, model):
    """d loss / d theta for every parameter (zero where it does not reach or does not train)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    return {n: torch.zeros_like(p) if grads.get(n) is None else grads[n] for n, p in model.named_parameters()}


def _rel_dist(a: dict, b: dict) -> float:
    num = sum(float((a[n] - b[n]).pow(2).sum()) for n in a)
    den = sum(float(b[n].pow(2).sum()) for n in b)
    return (num / den) ** 0.5


def _prepared(method, target, tofu_dir, tmp_path, **kw):
    from llm.train.unlearning import prepare_run
    cfg = micro_train_config(target, tofu_dir, tmp_path, method=method, batch_size=4, effective_batch=4,
                             lr=LR, max_grad_norm=0.0, stop_after=1, **kw)
    run = prepare_run(cfg, "unlearn")
    if run.ref_model is not None:  # move the live reference away from the model, so that it matters
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in run.ref_model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    (items,) = run.plan.items(0, 0, 1, 4, 1)
    return run, items


def _one_sgd_step(run, tmp_path, monkeypatch):
    """Run the trainer's first step with plain SGD; returns (logged loss, -delta theta / lr)."""
    from llm.train.loop import fit
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr))
    assert fit(run, tmp_path / "work") == 1
    rows = [json.loads(r) for r in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    return rows[0]["loss"], {n: (before[n] - p.detach()) / LR for n, p in run.model.named_parameters()}


# ---- the four token-level methods: loss and one SGD step ----------------------------------------

TOKEN_METHODS = ["wga", "satimp", "ceu", "undial"]
#: a neighbouring formula per method, to show that the comparison tells them apart
OTHER = {"wga": {"beta": 0.0}, "satimp": {"beta1": 1.0}, "ceu": {"ignore_first_n_answer_tokens": 0},
         "undial": {"beta": 0.0}}
#: CE-U's gradient p - q is a difference of nearly equal distributions (q = p without the true
#: token, renormalised; p_y ~ 1/V on an untrained model): float32 cancellation leaves ~2e-4
TOL = {"ceu": 1e-3}


@pytest.mark.slow
@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_one_step_matches_open_unlearnings_formula(method, target, tofu_dir, tmp_path, monkeypatch):
    from llm.train.methods import get
    hp = dict(get(method).hparams)
    if method == "satimp":  # beta1 5 on an untrained model: weights ~1e-20, gradient lost in rounding
        hp["beta1"] = 0.5
    run, items = _prepared(method, target, tofu_dir, tmp_path, hparams={"beta1": 0.5} if method == "satimp" else {})
    assert (run.ref_model is not None) == (method == "undial")
    expected_loss = independent_loss(method, run, items, hp)
    expected = _grad(expected_loss, run.model)
    other = _grad(independent_loss(method, run, items, {**hp, **OTHER[method]}), run.model)
    ref_before = None if run.ref_model is None else copy.deepcopy(run.ref_model.state_dict())
    loss, moved = _one_sgd_step(run, tmp_path, monkeypatch)
    assert loss == pytest.approx(expected_loss.item(), rel=1e-4)
    tol = TOL.get(method, 1e-4)
    assert _rel_dist(moved, expected) < tol
    assert _rel_dist(other, expected) > 10 * tol
    if ref_before is not None:
        assert all(torch.equal(p, ref_before[n]) for n, p in run.ref_model.state_dict().items())


def test_ceu_skips_each_answers_first_token():
    """The trainer step above also tells skip 1 from skip 0 by the gradient (OTHER); here the rows
    of each answer's first position are poisoned with NaN: they must not enter the loss."""
    from llm.train.methods import Inputs, get
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)  # answers start at 2 and 1
    logits = torch.randn(int(mask.sum()), 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    first = (mask.cumsum(-1) == 1)[mask]
    assert first.tolist() == [True, False, False, True, False, False, False, False]
    logits[first] = float("nan")
    x = Inputs(forget_mask=mask, forget_logits=logits, forget_labels=labels)
    method = get("ceu")
    loss = method.loss(x, **method.hparams)["loss"]
    assert torch.isfinite(loss)
    z, y = logits[~first], labels[~first]  # CE-U by hand on the other six positions
    target = z.clone()
    target[torch.arange(len(y)), y] = float("-inf")
    by_hand = -(torch.softmax(target, -1) * torch.log_softmax(z, -1)).sum(-1).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert torch.isnan(method.loss(x, **{**method.hparams, "ignore_first_n_answer_tokens": 0})["loss"])


@pytest.mark.slow
def test_undial_ignores_prompt_and_padding_positions(target, tofu_dir, tmp_path, monkeypatch):
    run, items = _prepared("undial", target, tofu_dir, tmp_path)
    forget = [run.train[i] for i, _, _, _ in items]
    assert len({len(r["input_ids"]) for r in forget}) > 1  # the batch has padding
    ours = _undial(run.model, run.ref_model, forget, 10.0)
    planted = _undial_open_unlearning(run.model, run.ref_model, forget, 10.0, run.tokenizer.pad_token_id)
    expected = _grad(ours, run.model)
    # open-unlearning's version on the same batch: the prompt and padding positions move the weights
    # elsewhere (the value barely differs on an untrained model: every position's CE is ~log V)
    assert _rel_dist(_grad(planted, run.model), expected) > 1e-2
    loss, moved = _one_sgd_step(run, tmp_path, monkeypatch)
    assert loss == pytest.approx(ours.item(), rel=1e-5)
    assert _rel_dist(moved, expected) < 1e-4


# ---- from the command line, in the pipeline's list and in the figures' styles --------------------

CLI = [("wga", []), ("satimp", []), ("ceu", []), ("undial", []), ("rmu", ["--hp", "layer=1"])]


def _forget_logp(model_dir, rows, pad_id):
    """Mean per-token log-prob of the forget answers under the model saved in ``model_dir``."""
    from llm.data.formatting import collate
    from llm.models import answer_logprob, load_model_and_tokenizer, token_counts
    model, _ = load_model_and_tokenizer(str(model_dir))
    b = collate(rows, pad_id)
    with torch.no_grad():
        return float(answer_logprob(model, b["input_ids"], b["attention_mask"], b["labels"]).sum()
                     / token_counts(b["labels"]).sum())


@pytest.fixture(scope="module")
def memorised(tofu_dir, tmp_path_factory):
    """The tiny preset fine-tuned on the 4 forget01 items the CLI runs unlearn (a target that knows
    them: an untrained model has nothing to forget, and WGA's weights sg(p)^beta are ~1/V there)."""
    from llm.train.loop import TrainConfig, finetune
    root = tmp_path_factory.mktemp("memorised")
    return finetune(TrainConfig(model="tiny", data_dir=str(tofu_dir), split="forget01", max_examples=4,
                                epochs=40, lr=3e-3, batch_size=4, effective_batch=4, warmup_epochs=0.0,
                                weight_decay=0.0, seed=0, device="cpu", out=str(root / "target")))


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", CLI, ids=[m for m, _ in CLI])
def test_cli_unlearns_forget01(method, extra, memorised, tofu_dir, tmp_path, capsys):
    target = memorised
    from llm.train.cli import unlearn_main
    from llm.train.unlearning import prepare_run
    out = tmp_path / "out"
    args = ["--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01", "--method", method,
            "--max-examples", "4", "--epochs", "3", "--batch-size", "2", "--effective-batch", "2",
            "--lr", "3e-3", "--warmup-epochs", "0", "--device", "cpu", "--out", str(out),
            "--ref-cache", str(tmp_path / "rc"), "--json"] + extra
    assert unlearn_main(args) == 0, capsys.readouterr().err
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["method"] == method
    run = prepare_run(micro_train_config(target, tofu_dir, tmp_path, method="ga", max_examples=4))
    pad = run.tokenizer.pad_token_id
    # unlearned: the forget answers' log-prob went down from the target's
    assert _forget_logp(out, run.train, pad) < _forget_logp(target, run.train, pad) - 0.01


def test_pipeline_and_figures_know_the_new_methods(tofu_dir, capsys):
    from figures.style import method_style
    from llm.pipeline import cli as pipeline_cli
    from llm.train.methods import get
    labels = [get(m).label for m, _ in CLI]
    assert pipeline_cli.main(["--data-dir", str(tofu_dir), "--dry-run", "--json", "--methods", *labels]) == 0
    ids = {r["id"] for r in json.loads(capsys.readouterr().out)}
    for m, _ in CLI:
        slug = get(m).label.lower().replace("+", "_")
        assert any(f"-{slug}-" in i for i in ids), (m, sorted(ids)[:5])
    styles = [method_style(label) for label in labels]
    assert [s["color"] for s in styles] == [get(m).colour for m, _ in CLI]
    old = {method_style(m.label)["color"] for m in __import__("llm.train.methods", fromlist=["REGISTRY"]).REGISTRY.values()
           if m.name not in dict(CLI)}
    assert not old & {s["color"] for s in styles}  # colours distinct from the existing methods'


# ---- the plumbing: hidden states after a layer, a method's own trainable set ---------------------

def test_hidden_after_is_the_layers_output_and_restrict_trainable_freezes_the_rest(target):
    from llm.train.methods import Method
    from llm.train.methods.inputs import decoder_layer, hidden_after, restrict_trainable
    from llm.models import load_model_and_tokenizer
    model, _ = load_model_and_tokenizer(str(target))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
        hooks = dict(decoder_layer(model, 0)._forward_hooks)  # transformers' own output-capturing one
        for layer in (0, 1):
            with hidden_after(model, layer) as got:
                model(input_ids=ids)
            assert torch.equal(got["hidden"], states[layer + 1])
    assert dict(decoder_layer(model, 0)._forward_hooks) == hooks  # ours is gone after the block
    with pytest.raises(ValueError, match="0 <= N < 3"):
        decoder_layer(model, 3)
    first = Method("x", "X", "x", "none", {}, frozenset(), None, "#000000",
                   trainable=lambda m, **_: m.model.layers[0].parameters())
    left = restrict_trainable(model, first, {})
    assert left == sum(p.numel() for p in model.model.layers[0].parameters())
    assert all(p.requires_grad == n.startswith("model.layers.0.") for n, p in model.named_parameters())


# ---- RMU ------------------------------------------------------------------------------------------

RMU_HP = {"layer": 1}  # the tiny preset has 3 decoder layers; open-unlearning's default 7 is past them


def _hidden_after(model, row, layer):
    """[T, H] the output of decoder layer ``layer``: hidden_states[layer + 1] (index 0 is the
    embeddings; below the last layer, where Hugging Face applies the final norm)."""
    out = model(input_ids=torch.tensor([row["input_ids"]]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].float()


def _activation_loss(pairs):
    """open-unlearning's compute_activation_loss over rows given as (hidden [T, H], target, mask [T])."""
    per_row = []
    for h, target, mask in pairs:
        per_row.append(((h - target) ** 2).mean(-1)[mask].sum() / mask.sum())
    return sum(per_row) / len(per_row)


def _rmu(model, ref_model, forget, retain, hp):
    u = torch.rand(model.config.hidden_size, generator=torch.Generator().manual_seed(hp["control_seed"]))
    control = hp["steering_coeff"] * u / torch.linalg.vector_norm(u)
    labelled = lambda row: torch.tensor([y != -100 for y in row["labels"]])  # noqa: E731
    f = _activation_loss([(_hidden_after(model, r, hp["layer"]), control, labelled(r)) for r in forget])
    with torch.no_grad():
        ref = [_hidden_after(ref_model, r, hp["layer"]) for r in retain]
    k = _activation_loss([(_hidden_after(model, r, hp["layer"]), h, labelled(r)) for r, h in zip(retain, ref)])
    return hp["forget_weight"] * f + hp["retain_weight"] * k


@pytest.mark.slow
def test_rmu_one_step_matches_open_unlearnings_formula_and_trains_only_its_layers(
        target, tofu_dir, tmp_path, monkeypatch):
    from llm.train.methods import get
    hp = {**get("rmu").hparams, **RMU_HP, "steering_coeff": 20.0}
    run, items = _prepared("rmu", target, tofu_dir, tmp_path, hparams={**RMU_HP, "steering_coeff": 20.0})
    forget = [run.train[i] for i, _, _, _ in items]
    retain = [run.retain[r] for _, r, _, _ in items]
    expected_loss = _rmu(run.model, run.ref_model, forget, retain, hp)
    expected = _grad(expected_loss, run.model)
    given = []
    sgd = lambda params, lr, weight_decay: given.extend(params) or torch.optim.SGD(given, lr=lr)  # noqa: E731
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    from llm.train.loop import fit
    monkeypatch.setattr(torch.optim, "AdamW", sgd)
    assert fit(run, tmp_path / "work") == 1
    loss = json.loads((tmp_path / "work" / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == pytest.approx(expected_loss.item(), rel=1e-4)
    moved = {n: before[n] - p.detach() for n, p in run.model.named_parameters()}
    assert _rel_dist(moved, expected) < 1e-4
    # the optimizer got exactly the embeddings and decoder layers 0..1; the rest is bit-identical
    chosen = {n for n, p in run.model.named_parameters() if any(p is q for q in given)}
    reach = {n for n in before if n.startswith(("model.embed_tokens.", "model.layers.0.", "model.layers.1."))}
    assert chosen == reach
    untouched = [n for n in before if n not in reach]
    assert any(n.startswith("model.layers.2.") for n in untouched) and "lm_head.weight" in untouched
    assert all(torch.equal(dict(run.model.named_parameters())[n], before[n]) for n in untouched)
    assert all(float(moved[n].abs().max()) > 0 for n in ("model.layers.0.mlp.down_proj.weight",
                                                         "model.layers.1.mlp.down_proj.weight"))


def test_rmu_layer_past_the_model_is_one_line_exit_2(target, tofu_dir, tmp_path, capsys):
    from llm.train.cli import unlearn_main
    code = unlearn_main(["--model", str(target), "--data-dir", str(tofu_dir), "--forget", "forget01",
                         "--method", "rmu", "--max-examples", "4", "--out", str(tmp_path / "out"),
                         "--ref-cache", str(tmp_path / "rc")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--hp layer=N with 0 <= N < 3" in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_tradeoff_figure_draws_the_new_methods_in_their_colours(tmp_path, capsys, drawn):
    import matplotlib.colors as mcolors

    from figures import fig5_tofu_tradeoff as fig5
    from llm.train.methods import by_label
    from test_figures_tofu import write_results
    labels = ["WGA", "SatImp", "CE-U", "UNDIAL", "RMU"]
    runs = [(task, m, 0, 1.0 if m in ("WGA", "SatImp", "RMU") else 0.0, "")
            for task in ("forget01", "forget05", "forget10") for m in ["NPO"] + labels]
    root = write_results(tmp_path / "results", runs)
    assert fig5.main(["--quick", "--from-results", str(root), "--out", str(tmp_path / "out")]) == 0
    fig = drawn[0]
    for ax in fig.axes:
        drawn_colours = {c.get_label(): mcolors.to_hex(c.lines[0].get_color()) for c in ax.containers}
        assert {k: v.upper() for k, v in drawn_colours.items() if k in labels} == \
            {m: by_label(m).colour.upper() for m in labels}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["NPO"] + labels  # the paper's grid first, then registration order
