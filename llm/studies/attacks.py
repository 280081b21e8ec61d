"""Both attacks on a set of models of one forget split, into one ``attacks.json`` for the figure.

    python -m llm attacks --forget forget01 --target runs/target --retain runs/retain99 \\
        --retain-logs runs/retain99/eval/TOFU_EVAL.json --model NPO+RT=runs/npo_rt \\
        --model GA+RT=runs/ga_rt --steps 20 --lr 1e-3 --out runs/attacks.json

For every model (the unlearned ones, and the target and retain models as references): the TOFU
evaluation before and after ``--quantize`` (llm/evaluate/quantize.py, each scheme), and the relearning
attack (llm/studies/relearn.py) whose baseline is the same attack on the retain model (run once, shared).
``python -m llm pipeline --attacks`` calls ``attack_models`` as one stage per task, on each run's
final model and its best-Forget-Quality epoch's (entries "<method> final" and "<method> best-FQ");
``figures/fig_attacks.py`` reads the file and computes nothing.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from infra.cli import parser, run
from infra.files import write_json
from llm.studies.relearn import RelearnConfig, RelearnError, check_config, recovery, relearn_curve

__all__ = ["SUMMARY_KEYS", "attack_models", "read_attacks", "main"]

#: the summary numbers kept per evaluation
SUMMARY_KEYS = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_Q_A_Prob",
                "forget_Q_A_ROUGE")
#: 2: a model may be one variant of a pipeline run ("final" or "best_fq", with its epoch); 1 had
#: final models only, under the method's name
ATTACKS_SCHEMA = "npo-unlearning/attacks/2"


def _evaluate(model_dir: str, cfg: RelearnConfig, schemes, group_size: int, ds_size, retain_logs,
              target=None) -> dict:
    """The TOFU summary before and after each quantization scheme; with ``target`` (a loaded model), each
    scheme's record also holds ``grid_vs_target`` (quantize.grid_agreement: how many of the
    model's quantized codes are the target's, i.e. where quantizing undoes the unlearning)."""
    from llm.models import load_model_and_tokenizer
    from llm.evaluate.quantize import grid_agreement, quantize_model
    from llm.evaluate.scoring import evaluate_model
    load = lambda d: load_model_and_tokenizer(d, device=cfg.device, data_dir=cfg.data_dir)
    out = {}
    for scheme in ("none", *schemes):
        model, tok = load(model_dir)
        grid = grid_agreement(model, target, scheme, group_size) if target is not None and scheme != "none" else None
        stats = quantize_model(model, scheme, group_size) if scheme != "none" else None
        if grid:
            stats["grid_vs_target"] = grid
        s = evaluate_model(model, tok, cfg.forget, cfg.data_dir, cfg.template, retain_logs,
                           ds_size, cfg.eval_batch_size, cfg.max_new_tokens)["summary"]
        out[scheme] = {**{k: s[k] for k in SUMMARY_KEYS}, **({"quantization": stats} if stats else {})}
    return out


def attack_models(models: dict[str, str | dict], target: str | None, retain: str, cfg: RelearnConfig,
                  schemes=("int4",), group_size: int = 128, ds_size=None, log=print,
                  eval_retain_logs: str | None = None) -> dict:
    """{"schema", "forget", "relearn": config, "models": {name: {"role", "eval", "relearn", ...}}}.

    ``models`` maps a name to an unlearned model folder, or to {"path": folder, ...} whose other
    keys are copied into the model's entry (the pipeline's: "method", "seed", "run", "variant"
    "final" or "best_fq", and for best_fq "step", "epoch", "forget_quality" of that evaluation and
    "model": "target" when it was step 0). A folder already attacked under another name (a best-FQ
    model that is the target) is not attacked again: its entry gets that name's results and
    ``"same_as": name``. ``eval_retain_logs``: the retain log Forget Quality uses in the
    before/after-quantization evaluations (the same ``ds_size`` items); default ``cfg.retain_logs``,
    which relearning's per-half Forget Quality needs over every forget item."""
    check_config(cfg)
    entries = {"retain": {"path": retain, "role": "retain"},
               **({"target": {"path": target, "role": "target"}} if target else {}),
               **{name: {**(m if isinstance(m, dict) else {"path": m}), "role": "method"}
                  for name, m in models.items()}}
    doc = {"schema": ATTACKS_SCHEMA, "forget": cfg.forget, "relearn": dataclasses.asdict(cfg) | {"data_dir": None},  # where the data lay is no setting: not recorded
           "schemes": list(schemes), "group_size": group_size, "models": {}}
    baseline, done, reference = None, {}, None          # done: folder -> the first name attacked on it
    with tempfile.TemporaryDirectory(prefix="relearn-") as tmp:
        for name, entry in entries.items():
            path = entry.pop("path")
            key = str(Path(path).resolve())
            if key in done:
                first = doc["models"][done[key]]
                doc["models"][name] = {**entry, "same_as": done[key], "eval": first["eval"],
                                       "relearn": first["relearn"]}
                continue
            log(f"attacks: {name} ({path})")
            curve = relearn_curve(path, cfg, Path(tmp) / f"m{len(done)}")
            if entry["role"] == "retain":
                baseline = curve
            done[key] = name
            if reference is None and target and schemes:   # loaded once, for every model's grid
                from llm.models import load_model_and_tokenizer
                reference = load_model_and_tokenizer(target, device=cfg.device, data_dir=cfg.data_dir)[0]
            doc["models"][name] = {**entry, "eval": _evaluate(path, cfg, schemes, group_size, ds_size,
                                                              eval_retain_logs or cfg.retain_logs,
                                                              reference if entry["role"] != "target" else None),
                                   "relearn": {"curve": curve, "recovery": recovery(curve, baseline)}}
    return doc


def read_attacks(path) -> dict:
    """The attacks file, checked (ValueError, one line, for anything else)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}; write it with python -m llm attacks "
                         f"or python -m llm pipeline --attacks") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if isinstance(schema, str) and schema.startswith("npo-unlearning/attacks/") and schema != ATTACKS_SCHEMA:
        raise ValueError(f"{path} is an attacks file of schema {schema} (final models only); rewrite it "
                         f"with python -m llm pipeline --attacks (or python -m llm attacks), which writes "
                         f"{ATTACKS_SCHEMA}")
    if schema != ATTACKS_SCHEMA or not doc.get("models"):
        raise ValueError(f"{path} is not an attacks file ({ATTACKS_SCHEMA}); write it with python -m llm attacks")
    return doc


# ---- command line -------------------------------------------------------------------------------

PROG = "python -m llm attacks"


def _parser():
    p = parser(PROG, __doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", required=True,
                   help="an unlearned model (repeat)")
    p.add_argument("--target", default=None, help="target model (reference)")
    p.add_argument("--retain", required=True, help="retain model (reference and relearning baseline)")
    p.add_argument("--retain-logs", default=None, help="retain model's TOFU_EVAL.json (Forget Quality)")
    p.add_argument("--forget", default="forget01")
    p.add_argument("--relearn-split", dest="split", default="first_half")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantize", nargs="+", default=["int4"], help="schemes (int8, int4)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--ds-size", type=int, default=None, help="quantization evals: first N items per set")
    p.add_argument("--template", default="llama2", choices=["llama2", "qa", "chat"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="attacks.json to write")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from llm.train.config import ConfigError
    from llm.data.tofu import DataError
    from llm.evaluate.summary import EvalError
    from llm.models import ModelError
    from llm.evaluate.quantize import QuantizeError
    return run(PROG, _main, args, user_errors=(RelearnError, QuantizeError, EvalError, DataError,
                                               ModelError, ConfigError))


def _main(args) -> int:
    from llm.evaluate.quantize import check_scheme
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise RelearnError(f"--model takes NAME=DIR, not {item!r}")
        models[name] = path
    for s in args.quantize:
        check_scheme(s, args.group_size)
    cfg = RelearnConfig(model="", forget=args.forget, split=args.split, steps=args.steps, lr=args.lr,
                        batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed,
                        fq=args.retain_logs is not None, retain_logs=args.retain_logs,
                        data_dir=args.data_dir, template=args.template,
                        max_new_tokens=args.max_new_tokens, device=args.device)
    doc = attack_models(models, args.target, args.retain, cfg, tuple(args.quantize), args.group_size,
                        args.ds_size)
    write_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
