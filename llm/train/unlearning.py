"""What unlearning adds to the training loop of llm/train/loop.py: the method (llm/train/methods/: its
hyper-parameters and its loss, built only from theory/objectives.py), its data (retain rows, IDK
answers), the reference (cached or live) and the inputs of one micro-batch. llm/train/loop.py takes
these as an ``Objective`` instead of importing them, so that fine-tuning's code hash (the
pipeline's target and retain stages) does not include the methods.

    from llm.train.unlearning import unlearn
    unlearn(TrainConfig(model="runs/target", forget="forget01", method="npo_rt", out="runs/npo_rt"))

A method's inputs: one forward over the micro-batch's forget, retain and IDK rows
(``llm.train.loop.forward``), then ``INPUT_BUILDERS[need](m, x)`` for each need of the method, in the
dict's order. A new kind of input ("logits", "ref_logits", "hidden") is one builder added there
(it reads the forward's ``Micro`` and fills its ``Inputs`` fields) plus, if it needs data or a
model prepared once, a line in ``_prepare``; until then ``_needs`` refuses a method that asks for
it. A method's ``trainable`` (RMU) is not applied yet: llm/train/loop.py ``fit`` trains
``checkpoints.trainable(model)``, the place to hand it over.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.train import distributed, model_setup, loop as train
from llm.train.checkpoints import unwrap
from llm.train.config import ConfigError, TrainConfig
from llm.data.tofu import DataError, load_idk
from llm.data.order import make_order
from llm.data.formatting import collate, encode_qa
from llm.train.methods import REGISTRY, Inputs, get, resolve_hparams
from llm.train.methods import inputs
from llm.models import answer_logprob, answer_token_logprobs, logits_at, row_sums, token_counts

__all__ = ["OBJECTIVE", "INPUT_BUILDERS", "unlearn", "prepare_run", "micro_losses"]

#: The alias flags of ``--hp`` (llm/train/config.py), applied where the method has that hyper-parameter.
ALIASES = ("beta", "forget_weight", "retain_weight")


def unlearn(config: TrainConfig, eval_fn: train.EvalFn | None = None) -> Path:
    """Unlearn ``config.forget`` from ``config.model`` with ``config.method``; returns the output folder."""
    return train._train(config, "unlearn", eval_fn, OBJECTIVE)


def prepare_run(cfg: TrainConfig, mode: str = "unlearn", dist=None) -> train.Run:
    """llm.train.loop.prepare_run for unlearning (the same signature, so tests and benchmarks can swap it in)."""
    if mode != "unlearn":
        raise ValueError(f"llm.train.unlearning prepares unlearning runs, not {mode!r}; use llm.train.loop.prepare_run")
    return train.prepare_run(cfg, mode, dist, OBJECTIVE)


def _resolve(cfg: TrainConfig) -> TrainConfig:
    """``cfg.hparams`` = every hyper-parameter of the method (its defaults, the alias flags, then
    ``--hp``), the aliases folded in (set to None); ConfigError naming the fix for an unknown
    method or name, a value the method refuses, or an alias and ``--hp`` that disagree."""
    try:
        method = get(cfg.method)
        given = resolve_hparams(method, cfg.hparams)  # --hp's names and values checked first
        aliases = {k: getattr(cfg, k) for k in ALIASES if getattr(cfg, k) is not None and k in method.hparams}
        for k, value in aliases.items():
            if k in cfg.hparams and given[k] != value:
                raise ValueError(f"--{k.replace('_', '-')} {value} and --hp {k}={cfg.hparams[k]} disagree; "
                                 f"give one")
        cfg.hparams = resolve_hparams(method, {**cfg.hparams, **aliases})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for k in ALIASES:
        setattr(cfg, k, None)
    return cfg


# ---- preparing a run: data, plan, sharding, reference -------------------------------------------

def _prepare(run: train.Run, train_rows: list[dict]) -> None:
    """The method's data (retain rows, IDK answers), the plan, FSDP sharding and the reference."""
    cfg, need = run.cfg, run.need
    retain_rows, idk_rows = [], []
    if need & {"retain", "kl"}:
        if cfg.retain is None:
            raise ConfigError(f"{cfg.method} needs a retain split; pass --retain")
        retain_rows = train._rows(cfg.retain, cfg)
        if not retain_rows:
            raise DataError("the retain set is empty; check --retain and --max-examples")
        run.retain = train._encode(run.tokenizer, retain_rows, cfg)
    if "idk" in need:
        idk_rows = load_idk(cfg.idk_file, cfg.data_dir)
    run.plan = make_order(cfg, len(train_rows), len(retain_rows), len(idk_rows),
                         [len(e["input_ids"]) for e in run.train], [len(e["input_ids"]) for e in run.retain])
    if idk_rows:
        run.idk = {(i, k): encode_qa(run.tokenizer, train_rows[i]["question"], idk_rows[k]["answer"],
                                     cfg.template, cfg.max_length) for i, k in run.plan.idk_pairs()}
    try:  # a "hidden" method's layer, a method's own trainable set (llm/train/methods/inputs.py)
        inputs.prepare(run, get(cfg.method))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if run.sharded:
        _shard_reference(run)
        model_setup.shard_model(run)
    if need & ({"ref", "ref_token"} | inputs.LIVE_NEEDS):
        _build_reference(run)


def _live(run: train.Run) -> bool:
    """A live reference: always for KL and the reference's per-position logits or hidden states
    (inputs.LIVE_NEEDS), else by --reference."""
    return bool(run.need & inputs.LIVE_NEEDS) or run.cfg.reference == "live"


def _shard_reference(run: train.Run) -> None:
    """Before the model is sharded: the cache key's weight fingerprint (on the whole model every
    rank loaded) and a live reference, a frozen copy sharded the same way (``python -m llm plan``
    counts it)."""
    cfg, need = run.cfg, run.need
    if need & {"ref", "ref_token"}:
        from llm.train.refcache import model_fingerprint
        run.fingerprint = model_fingerprint(run.model, _identity(cfg))
    if need & inputs.LIVE_NEEDS or (need & {"ref", "ref_token"} and cfg.reference == "live"):
        ref = copy.deepcopy(run.model).eval().requires_grad_(False)
        run.ref_model = distributed.shard(ref, run.dist, run.precision, cfg.cpu_offload)


def _build_reference(run: train.Run) -> None:
    cfg, need = run.cfg, run.need
    run.live_reference = _live(run)
    if need & {"ref", "ref_token"} and not run.live_reference:
        pairs = list(run.idk)

        def compute(force=False):
            return _cached_reference(run, pairs, force)

        if run.sharded:  # the passes are collective (FSDP gathers each layer): all ranks take part
            values = compute()
        else:  # rank 0 fills the cache, the others then read it
            if run.dist.main:
                values = compute()
            distributed.barrier(run.dist)
            if not run.dist.main:
                values = compute()
        run.ref = values
    if run.live_reference and not cfg.lora and run.ref_model is None:
        run.ref_model = copy.deepcopy(run.model).eval().requires_grad_(False)


def _identity(cfg: TrainConfig) -> str:
    if cfg.model in ("tiny", "small", "gpu"):
        return f"{cfg.model}|seed={cfg.seed}"
    return str(Path(cfg.model).resolve() if Path(cfg.model).exists() else cfg.model)


def _cached_reference(run: train.Run, pairs, force) -> dict:
    """{"forget": [N] sums, "idk": {(item, idk): sum}, "forget_token": [N] per-token tensors}, as needed."""
    from llm.train.refcache import cached_reference_logps, cached_reference_token_logps, model_fingerprint
    # FSDP's bf16 policy rounds differently from autocast: keep the two apart in the cache
    precision = run.precision + ("/fsdp" if run.sharded and run.precision == "bf16-mixed" else "")
    kw = dict(precision=precision, batch_size=run.cfg.eval_batch_size, autocast=run.autocast, force=force)
    pad, out = run.tokenizer.pad_token_id, {}
    if "ref" in run.need:
        seqs = {"forget": run.train} | ({"idk": [run.idk[p] for p in pairs]} if pairs else {})
        values = cached_reference_logps(run.model, seqs, pad, run.cfg.ref_cache, identity=_identity(run.cfg),
                                        fingerprint=run.fingerprint, **kw)
        out["forget"] = torch.as_tensor(values["forget"])
        out["idk"] = dict(zip(pairs, values["idk"].tolist())) if pairs else {}
    if "ref_token" in run.need:
        fingerprint = run.fingerprint or model_fingerprint(run.model, _identity(run.cfg))
        out["forget_token"] = cached_reference_token_logps(run.model, run.train, pad, run.cfg.ref_cache,
                                                           fingerprint=fingerprint, **kw)
    return out


# ---- one micro-batch ------------------------------------------------------------------------------

@dataclass
class Micro:
    """One micro-batch's forward, as the input builders read it: ``groups`` (forget, retain, idk
    rows, batched in that order), their row slices, the collated ``batch``, the answer mask [B, T],
    ``logits`` [N, V] at ``keep`` [B, T], per-answer-token ``nll`` and per-row ``logp``/``tokens``."""
    run: train.Run
    items: list
    groups: dict
    rows: dict
    batch: dict
    answer: torch.Tensor
    keep: torch.Tensor
    logits: torch.Tensor
    nll: torch.Tensor
    logp: torch.Tensor
    tokens: torch.Tensor
    kl_keep: torch.Tensor | None = None
    hidden: torch.Tensor | None = None      # [B, T, H] after the method's layer ("hidden")


def micro_losses(run: train.Run, model, items) -> dict[str, torch.Tensor]:
    """The method's loss parts on one micro-batch ``items`` = [(item, retain, idk, epoch), ...]."""
    need = run.need
    groups = {"forget": [run.train[i] for i, _, _, _ in items]}
    if need & {"retain", "kl"}:
        groups["retain"] = [run.retain[r] for _, r, _, _ in items]
    if "idk" in need:
        groups["idk"] = [run.idk[(i, k)] for i, _, k, _ in items]
    rows, start = {}, 0
    for name, g in groups.items():
        rows[name] = slice(start, start + len(g))
        start += len(g)
    kl_keep = None

    def retain_positions(batch):  # a KL term projects every real position of the retain rows
        nonlocal kl_keep
        kl_keep = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
        kl_keep[rows["retain"]] = batch["attention_mask"][rows["retain"]].bool()
        return kl_keep

    with inputs.capture(run, model) as captured:
        batch, answer, keep, logits, nll = train.forward(run, model, [r for g in groups.values() for r in g],
                                                         retain_positions if "kl" in need else None)
    m = Micro(run, items, groups, rows, batch, answer, keep, logits, nll, row_sums(-nll, answer),
              token_counts(batch["labels"]), kl_keep, captured.get("hidden"))
    f = rows["forget"]
    x = Inputs(forget_logp=m.logp[f], forget_tokens=m.tokens[f])
    for name, build in INPUT_BUILDERS.items():
        if name in need:
            build(m, x)
    method = get(run.cfg.method)
    return method.loss(x, **run.cfg.hparams)


def _retain(m: Micro, x: Inputs) -> None:
    x.retain_logp, x.retain_tokens = m.logp[m.rows["retain"]], m.tokens[m.rows["retain"]]


def _idk(m: Micro, x: Inputs) -> None:
    x.idk_logp, x.idk_tokens = m.logp[m.rows["idk"]], m.tokens[m.rows["idk"]]


def _ref(m: Micro, x: Inputs) -> None:
    x.forget_ref, x.idk_ref = _reference_logps(m.run, m.items, m.groups)


def _kl(m: Micro, x: Inputs) -> None:
    r = m.rows["retain"]
    x.retain_kl = _retain_kl(m.run, m.logits[m.kl_keep[m.keep]], m.batch["input_ids"][r],
                             m.batch["attention_mask"][r])


def _token(m: Micro, x: Inputs) -> None:
    """Per-token log-probs of the forget answers, [B, T] in the logits' convention, 0 elsewhere."""
    values = torch.zeros(m.answer.shape, dtype=m.nll.dtype, device=m.nll.device)
    values = values.masked_scatter(m.answer, -m.nll)
    x.forget_token_logp, x.forget_mask = values[m.rows["forget"]], m.answer[m.rows["forget"]]


def _ref_token(m: Micro, x: Inputs) -> None:
    """The reference's per-token log-probs at the same positions (cached, or a live forward)."""
    run, mask = m.run, m.answer[m.rows["forget"]]
    if run.live_reference:
        with _reference(run) as ref_model:
            b = {k: v.to(run.dist.device) for k, v in collate(m.groups["forget"], run.tokenizer.pad_token_id).items()}
            with run.autocast():
                values = answer_token_logprobs(ref_model, b["input_ids"], b["attention_mask"], b["labels"])[0]
    else:
        values = torch.cat([run.ref["forget_token"][i] for i, _, _, _ in m.items]).to(run.dist.device, torch.float32)
    x.forget_ref_token_logp = torch.zeros(mask.shape, dtype=values.dtype, device=mask.device).masked_scatter(mask, values)


#: need -> builder(micro, inputs) filling the Inputs fields that need names, called in this order
#: (the reference before KL, as before the registry); "logits", "ref_logits" and "hidden" are
#: built in llm/train/methods/inputs.py. A method needing an input no builder makes is refused (``_needs``).
INPUT_BUILDERS = {"retain": _retain, "idk": _idk, "ref": _ref, "kl": _kl, "token": _token,
                  "ref_token": _ref_token, **inputs.BUILDERS}


def _needs(name: str) -> frozenset:
    need = get(name).needs
    missing = sorted(need - set(INPUT_BUILDERS))
    if missing:
        raise ConfigError(f"{name} needs {', '.join(missing)} inputs, which this trainer does not build "
                          f"yet; use another --method")
    return need


# ---- the live reference ---------------------------------------------------------------------------

def _reference(run: train.Run):
    """The live reference: a frozen copy, or the same model with its LoRA adapter disabled."""
    from llm.train.refcache import reference_mode
    return reference_mode(run.ref_model if run.ref_model is not None else unwrap(run.model))


def _reference_logps(run: train.Run, items, groups):
    device = run.dist.device
    if not run.live_reference:
        forget_ref = run.ref["forget"][[i for i, _, _, _ in items]].to(device, torch.float32)
        idk_ref = None
        if "idk" in groups:
            idk_ref = torch.tensor([run.ref["idk"][(i, k)] for i, _, k, _ in items],
                                   dtype=torch.float32, device=device)
        return forget_ref, idk_ref
    refs = []
    with _reference(run) as ref_model:
        for name in ("forget", "idk"):
            if name not in groups:
                refs.append(None)
                continue
            b = {k: v.to(device) for k, v in collate(groups[name], run.tokenizer.pad_token_id).items()}
            with run.autocast():
                refs.append(answer_logprob(ref_model, b["input_ids"], b["attention_mask"], b["labels"]))
    return refs[0], refs[1]


def _retain_kl(run: train.Run, logits, input_ids, mask):
    """Per-token KL(ref || theta) on the retain inputs' real (unpadded) positions; ``logits`` [N, V]
    are the model's at those positions (row-major), as the micro-batch's forward projected them."""
    from theory.objectives import kl_categorical
    with _reference(run) as ref_model:
        with run.autocast():
            ref_logits = logits_at(ref_model, input_ids, mask, mask.bool())
    cur = torch.log_softmax(logits.float(), -1)
    ref = torch.log_softmax(ref_logits.float(), -1)
    return kl_categorical(ref, cur)


OBJECTIVE = train.Objective(methods={n: m.doc for n, m in REGISTRY.items()}, resolve=_resolve, needs=_needs,
                            prepare=_prepare, micro_losses=micro_losses)
