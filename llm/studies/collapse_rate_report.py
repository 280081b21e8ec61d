"""The LLM collapse-rate result (``python -m llm collapse-rate``) as text, and read back.

``format_table(doc)`` is the command's table; ``read_result(path)`` reads the written JSON for the
figure (figures/fig_llm_collapse_rate.py), checking every field the figure draws, so that a missing
or malformed file ends in one line naming the fix (a ValueError) and not in a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infra.cli import MissingResults
from infra.files import read_json
from llm.studies.tofu_results import DEFAULT_RESULTS  # one definition: the committed CPU-scale results

__all__ = ["DEFAULT_RESULTS", "RESULT_NAME", "format_table", "read_result"]

RESULT_NAME = "llm_collapse_rate.json"
SERIES = ("steps", "forget_logratio", "param_distance")
CONFIG_KEYS = ("forget", "optimizer", "lr", "max_grad_norm", "steps")


def read_result(path) -> dict:
    """``<results>/llm_collapse_rate.json`` (a folder: its RESULT_NAME), validated."""
    path = Path(path)
    path = path / RESULT_NAME if path.is_dir() else path
    fix = "re-run python -m llm collapse-rate"
    if not path.is_file():
        raise MissingResults(f"{path} not found; run python -m llm collapse-rate first "
                         f"(or pass the folder that holds {RESULT_NAME})")
    try:
        doc = read_json(path)  # NonFiniteError (a ValueError) names the key
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc.msg}, line {exc.lineno}); {fix}") from None

    def need(ok, what):
        if not ok:
            raise ValueError(f"{path}: {what}; {fix}")

    need(isinstance(doc, dict) and isinstance(doc.get("config"), dict), "no 'config' object")
    missing = [k for k in CONFIG_KEYS if k not in doc["config"]]
    need(not missing, f"config has no {missing[0]!r}" if missing else "")
    need(isinstance(doc.get("methods"), list) and doc["methods"], "no 'methods' list")
    for i, m in enumerate(doc["methods"]):
        need(isinstance(m, dict) and m.get("method") in ("ga", "npo") and isinstance(m.get("label"), str),
             f"method {i} has no valid 'method' (ga or npo) and 'label'")
        need(m["method"] == "ga" or (_number(m.get("beta")) and m["beta"] > 0),
             f"method {i} ({m['label']}) has no beta > 0")
        series = [m.get(k) for k in SERIES]
        need(all(isinstance(s, list) and s and all(_number(v) for v in s) for s in series)
             and len({len(s) for s in series}) == 1,
             f"method {i} ({m['label']}): {', '.join(SERIES)} must be lists of numbers of one length")
        fit = m.get("fit")
        need(isinstance(fit, dict) and isinstance(fit.get("law"), str)
             and all(_number(fit.get(k)) for k in ("linear_r2", "log_r2")),
             f"method {i} ({m['label']}) has no 'fit' with law, linear_r2 and log_r2")
    return doc


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _fmt(x, spec: str) -> str:
    """``x`` formatted, or "-" right-aligned to the same width when a fit has no such number."""
    width = int(spec.split(".")[0])
    return format(x, spec) if _number(x) else "-".rjust(width)


def dead_step(method: dict) -> int | None:
    """The first recorded step after 0 whose gradient norm is exactly 0 (a destroyed model: GA can
    drive every logit to the same value), or None."""
    return next((t for t, g in zip(method["steps"], method["grad_norm"]) if t > 0 and g == 0.0), None)


def format_table(doc: dict) -> str:
    c = doc["config"]
    lines = [f"== {c['model']}: {c['forget']} ({doc['n_forget']} items), {c['optimizer']} lr={c['lr']:g}, "
             f"clip={c['max_grad_norm'] or 'off'}, {c['steps']} full-batch steps, {c['seeds']} seed(s) ==",
             f"{'method':<12} {'law of |D|':<12} {'R2 lin':>7} {'R2 log':>7} {'a (/step)':>10} {'c (/log)':>9} "
             f"{'tau':>7} {'exp':>5} {'|D|(T)':>8} {'|th-th0|':>9} {'W(T)':>6} {'retNLL':>7} "
             f"{'gnorm0':>7} {'gnormT':>7} {'law of |th-th0| (R2 lin/log)':<30} steps to |D|={c['threshold']:g} (xGA)"]
    for m in doc["methods"]:
        f, pf = m["fit"], m["param_fit"]
        t = m["steps_to_threshold"] if m["steps_to_threshold"] is not None else float("nan")
        cross = "-" if not np.isfinite(t) else f"{t:.4g}" + (
            "" if m["method"] == "ga" or m["steps_to_threshold_over_ga"] is None
            or not np.isfinite(m["steps_to_threshold_over_ga"])
            else f" (x{m['steps_to_threshold_over_ga']:.3g})")
        lines.append(f"{m['label']:<12} {f['law']:<12} {_fmt(f['linear_r2'], '7.4f')} {_fmt(f['log_r2'], '7.4f')} "
                     f"{_fmt(f['linear_slope'], '10.4g')} {_fmt(f['log_c'], '9.4g')} {_fmt(f['log_tau'], '7.3g')} "
                     f"{_fmt(f['growth_exponent'], '5.2f')} {abs(m['forget_logratio'][-1]):>8.4g} "
                     f"{m['param_distance'][-1]:>9.4g} {_fmt(m['npo_weight'][-1], '6.3f')} "
                     f"{m['retain_nll'][-1]:>7.3g} {m['grad_norm'][0]:>7.3g} {m['grad_norm'][-1]:>7.3g} "
                     f"{pf['law'] + ' (%.3f/%.3f)' % (pf['linear_r2'], pf['log_r2']):<30} {cross}")
    lines.append("(|D| = |mean forget log pi_t/pi_ref| in nats, summed over answer tokens; both laws "
                 "fitted over the last decade of each method's records: a t + c and c log t + d, "
                 "tau = exp(-d/c); exp = d log|D|/d log t there: 1 linear, -> 0 logarithmic, > 1.5 "
                 "superlinear)")
    for m in doc["methods"]:
        dead = dead_step(m)
        if dead is not None:
            lines.append(f"({m['label']}: the gradient vanished at step {dead} (norm exactly 0; retain NLL "
                         f"{m['retain_nll'][-1]:.4g}, log V when the model outputs a uniform distribution): "
                         f"the model was destroyed there, and fits over records after it say nothing)")
        if m.get("diverged_at") is not None:
            lines.append(f"({m['label']}: the log-ratio overflowed (log pi -> -inf) at step "
                         f"{m['diverged_at']}; its records and fits stop at step {m['steps'][-1]})")
    if not doc["theorem2_setting"]:
        lines.append("(not Theorem 2's setting: the laws are fitted all the same, for comparison)")
    return "\n".join(lines)
