"""Membership inference on TOFU for ``--metrics ou|all``: forget vs holdout items, scored by a model.

    stats = token_stats(model, tok, encode_mia_items(tok, rows, "llama2"))   # per item
    scores = attack_scores(stats, k=0.4, numerics="exact")                    # attack -> [score]
    entries = render_mia({"forget": f_scores, "holdout": h_scores})          # TOFU_EVAL.json entries

Members are the forget split's QA pairs (``forgetXX``), non-members TOFU's holdout set of the same
size (``holdoutXX``; open-unlearning's ``TOFU_MIA`` data config), each encoded with the template's
answer boundary (``llm.data.formatting.encode_qa``). Score definitions, AUC and privleak: llm/evaluate/mia.py.
In TOFU_EVAL.json each attack is stored as open-unlearning's ``mia_auc`` returns it,
``{"agg_value": AUC, "auc": AUC, "forget": {"agg_value", "value_by_index": {i: {"score"}}},
"holdout": {...}}``, so open-unlearning's privleak finds ``mia_min_k`` in our retain logs.
``extraction_strength`` (open-unlearning's default TOFU suite, forget split) rides on the same
forward pass.
"""
from __future__ import annotations

import numpy as np

from llm.evaluate import metrics, mia

__all__ = ["HOLDOUT_SIZES", "holdout_split", "encode_mia_items", "row_stats", "token_stats", "attack_scores",
           "render_mia", "read_mia", "mia_summary", "check_same_k"]

#: forget split size -> TOFU's holdout split of the same size (only these exist)
HOLDOUT_SIZES = ("01", "05", "10")


def holdout_split(forget: str) -> str:
    """``forget05`` -> ``holdout05``; ValueError naming the fix for sizes TOFU has no holdout for."""
    size = str(forget)[-2:]
    if size not in HOLDOUT_SIZES:
        raise ValueError(f"TOFU has no holdout set for {forget} (only holdout01/05/10); use "
                         f"--forget forget01/05/10 or --metrics paper")
    return f"holdout{size}"


def encode_mia_items(tokenizer, rows: list[dict], template: str) -> list[dict]:
    """Question + answer of each row, encoded with answer-only labels (answer + EOS)."""
    from llm.data.formatting import encode_qa
    return [encode_qa(tokenizer, r["question"], r["answer"], template) for r in rows]


def row_stats(tokenizer, logp, target) -> dict:
    """One item's statistics from its answer rows' log-softmax ``logp`` [n, V] and labels
    ``target`` [n] (answer + EOS), over the labelled tokens without the final EOS (open-unlearning's
    ``tokenwise_logprobs``): ``lp`` the token log-probs, ``mu``/``var`` the moments of log p under
    the model's next-token distribution, ``match`` whether the greedy token equals the label;
    ``text`` the decoded labels (zlib)."""
    logp, target = logp.float().cpu(), target.cpu()
    keep = logp[:-1]  # every labelled token but the final EOS
    p = keep.exp()
    mu = (p * keep).sum(-1)
    return {"lp": keep.gather(1, target[:-1, None])[:, 0].double().numpy(),
            "mu": mu.double().numpy(),
            "var": ((p * keep * keep).sum(-1) - mu * mu).double().numpy(),
            "match": (keep.argmax(-1) == target[:-1]).numpy(),
            "text": tokenizer.decode(target.tolist(), skip_special_tokens=True)}


def token_stats(model, tokenizer, encoded: list[dict], max_batch_tokens: int = 16384) -> list[dict]:
    """Per item, from one forward (``llm.evaluate.scoring.score_sequences``): ``avg_loss`` (mean NLL over
    answer + EOS labels) and ``row_stats``. ``llm.evaluate.scoring`` calls ``score_sequences`` itself, so
    that an evaluation scores the forget items once for both the TOFU metrics and the MIA."""
    import functools

    from llm.data.formatting import pad_id
    from llm.evaluate.scoring import score_sequences

    was_training = model.training
    model.eval()
    try:
        losses, details = score_sequences(model, encoded, pad_id(tokenizer), max_batch_tokens,
                                          range(len(encoded)), functools.partial(row_stats, tokenizer))
    finally:
        model.train(was_training)
    return [{"avg_loss": float(losses[i]), **details[i]} for i in range(len(encoded))]


def attack_scores(stats: list[dict], k: float = mia.DEFAULT_K, numerics: str = "exact") -> dict:
    """attack -> per-item scores (loss-signed). ``ou``: rounded to float32 as open-unlearning keeps
    them (which can only add ties)."""
    mia.check_k(k)
    scores = {
        "loss": [mia.loss_score(s["avg_loss"]) for s in stats],
        "zlib": [mia.zlib_score(s["avg_loss"], s["text"]) for s in stats],
        "min_k": [mia.min_k_score(s["lp"], k) for s in stats],
        "min_k_plus_plus": [mia.min_k_plus_plus_score(s["lp"], s["mu"], s["var"], k) for s in stats],
    }
    if metrics.check_numerics(numerics) == "ou":
        scores = {a: np.float32(v).astype(np.float64).tolist() for a, v in scores.items()}
    return scores


def render_mia(per_set: dict, stats_forget: list[dict] | None = None) -> dict:
    """{"forget": attack -> scores, "holdout": ...} -> open-unlearning TOFU_EVAL.json entries."""
    log = {}
    for attack, key in mia.ATTACKS.items():
        sets = {}
        for name in ("forget", "holdout"):
            values = per_set[name][attack]
            sets[name] = {"agg_value": float(np.mean(values)),
                          "value_by_index": {str(i): {"score": float(v)} for i, v in enumerate(values)}}
        auc = mia.auc(per_set["forget"][attack], per_set["holdout"][attack])
        log[key] = {"agg_value": auc, "auc": auc, **sets}
    if stats_forget is not None:
        es = [metrics.extraction_strength(s["match"]) for s in stats_forget]
        log["extraction_strength"] = {"agg_value": float(np.mean(es)),
                                      "value_by_index": {str(i): {"score": v} for i, v in enumerate(es)}}
    return log


def read_mia(per_item: dict, attacks=tuple(mia.ATTACKS)) -> dict | None:
    """attack -> {"forget": [scores], "holdout": [scores]} from a log's per-item MIA entries, in
    index order; None if the log has none of them. ValueError if one is incomplete."""
    found = {}
    for attack in attacks:
        entry = per_item.get(mia.ATTACKS[attack])
        if entry is None:
            continue
        try:
            found[attack] = {name: [float(v["score"]) for _, v in sorted(
                entry[name]["value_by_index"].items(), key=lambda kv: int(kv[0]))]
                for name in ("forget", "holdout")}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{mia.ATTACKS[attack]} lacks per-item forget/holdout scores; "
                             f"re-create the log with --metrics ou or all") from None
    return found or None


def mia_summary(own: dict, retain: dict | None, which: str, numerics: str = "exact") -> dict:
    """Summary keys from per-item scores (attack -> {"forget", "holdout"}): ``privleak`` against
    the retain model's Min-K% AUC, or without a retain reference against open-unlearning's
    default retain AUC 0.5 (``mia.DEFAULT_RETAIN_AUC``, its ``ref_value``), and which of the two
    was used: ``privleak_reference`` ("retain_log" or "default") and ``privleak_reference_auc``;
    with ``which == "all"`` ``mia_auc`` {attack: AUC}."""
    aucs = {a: mia.auc(s["forget"], s["holdout"]) for a, s in own.items()}
    if retain is not None:
        ref = retain[mia.PRIVLEAK_ATTACK]
        source, ref_auc = "retain_log", mia.auc(ref["forget"], ref["holdout"])
    else:
        source, ref_auc = "default", mia.DEFAULT_RETAIN_AUC
    out = {"privleak": mia.privleak(aucs[mia.PRIVLEAK_ATTACK], ref_auc, numerics),
           "privleak_reference": source, "privleak_reference_auc": ref_auc}
    if which == "all":
        out["mia_auc"] = aucs
    return out


def check_same_k(own_k, retain_k, name: str = "the retain log") -> None:
    """privleak compares two Min-K% AUCs: both must use the same k. A log that does not record its
    k (open-unlearning's) is taken at open-unlearning's TOFU value ``mia.DEFAULT_K``."""
    own = mia.DEFAULT_K if own_k is None else float(own_k)
    theirs = mia.DEFAULT_K if retain_k is None else float(retain_k)
    if own != theirs:
        raise ValueError(f"{name} was scored with --mia-k {theirs:g}, this model with {own:g}: "
                         f"privleak compares Min-K% AUCs of the same k; re-evaluate one of them "
                         f"with the other's --mia-k")
