"""Theorem 2 in numbers, on the command line: GA drifts from the initial model linearly in the step
count, NPO only logarithmically, at the rates theory/predictions.py states.

    python -m simulations.collapse_rate                 # both settings: tables + figure, ~5-8 s
    python -m simulations.collapse_rate --sweep n_forget  # fitted vs predicted scaling exponents
    python -m simulations.collapse_rate --json          # one JSON document instead of tables

Runs full-batch GD on GA and on NPO (one run per beta, all seeds stacked) in the logistic model of
Theorem 2 and in the tabular softmax model of Sec. 2.1 (defaults: orthogonal data, n_f = 20,
eta = 1, beta in {0.5, 1, 2}, 1e5 steps, 3 seeds) and prints, per setting and method:
* the fitted slope of ||b|| against t (GA) or log t (NPO), over t >= steps/100 (--fit-from),
  with its R^2, beside theory's g eta / sqrt(n_f) and sqrt(n_f) / beta;
* ||b|| at t = 1e5 beside the leading-order asymptotics (and the exact gradient flow);
* the steps each method needs to reach ||b|| = tau, and the NPO/GA ratio;
* Theorem 2's assumptions for the data used, and PASS/FAIL for each claim ("info" where the
  explicit formulas do not hold exactly, e.g. gaussian data).
Writes ``collapse_rate.png``/``.pdf`` into --out (drawn by figures/fig_collapse_rate.py through
``draw_figure``, this package's one plotting entry point) and caches trajectories in --results
as ``collapse_rate_<setting>-<hash>.npz``. Exit status: 0, 1 if a claim fails, 2 on a usage error.
The Python API is simulations/theorem2.py; this module is its command line.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path


from infra.cli import EXIT_FAILED, EXIT_OK, parser, run
from infra.files import DEFAULT_RESULTS_DIR, finite, jsonable

from . import logistic, theorem2
from .theorem2 import QUICK, SETTINGS, SWEEPS, Config, check_sweep, figure_data, sweep
from .theorem2_report import format_report, format_sweep

PROG = "python -m simulations.collapse_rate"


def _count(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = parser(PROG, __doc__)
    p.add_argument("--setting", choices=(*SETTINGS, "all"), default="all", help="which model(s)")
    p.add_argument("--data", choices=logistic.DATA_KINDS, default=d.data,
                   help="logistic inputs: x_i = e_i, or x_i ~ N(0, I/d)")
    p.add_argument("--n-forget", type=_count, default=d.n_forget, help="forget samples n_f")
    p.add_argument("--dim", type=_count, default=d.dim, help="input dimension d (logistic)")
    p.add_argument("--beta", type=float, nargs="+", default=list(d.beta), help="NPO betas")
    p.add_argument("--lr", type=float, default=d.lr, help="GD step size eta")
    p.add_argument("--steps", type=_count, default=d.steps, help="GD steps (1e6 accepted)")
    p.add_argument("--seeds", type=_count, default=d.seeds, help="number of seeds")
    p.add_argument("--seed", type=_count, default=d.seed, help="first seed")
    p.add_argument("--theta-init-norm", type=float, default=d.theta_init_norm,
                   help="|theta_init| (0 allowed); tabular: Frobenius norm of the logits")
    p.add_argument("--labels", choices=logistic.LABEL_KINDS, default=d.labels,
                   help="forget labels y_i (logistic)")
    p.add_argument("--classes", type=_count, default=d.classes, help="K (tabular)")
    p.add_argument("--fit-from", type=float, default=d.fit_from,
                   help="fit rates over t >= this (0: t >= steps/100)")
    p.add_argument("--per-decade", type=_count, default=d.per_decade, help="records per decade")
    p.add_argument("--sweep", choices=tuple(SWEEPS), default=None,
                   help="fit scaling exponents over a grid of this parameter (no figure)")
    p.add_argument("--values", type=float, nargs="+", default=None,
                   help="sweep grid (default: n_forget 5..80, beta 0.25..4, lr 0.125..1)")
    p.add_argument("--quick", action="store_true", help=f"CI-sized run: {QUICK}")
    p.add_argument("--out", default="figures/out", help="figure directory")
    p.add_argument("--results", default=str(DEFAULT_RESULTS_DIR), help="result cache directory")
    p.add_argument("--force", action="store_true", help="ignore cached results")
    return p


def config_from_args(args) -> Config:
    given = {f.name: getattr(args, f.name) for f in fields(Config)}
    given["beta"] = tuple(given["beta"])
    if args.quick:
        defaults = Config()
        given.update({k: v for k, v in QUICK.items() if given[k] == getattr(defaults, k)})
    return Config(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, _main, args)


def _main(args) -> int:
    cfg = config_from_args(args)
    settings = SETTINGS if args.setting == "all" else (args.setting,)
    cfg.validate(settings)
    try:
        if args.sweep:
            values = args.values or SWEEPS[args.sweep]
            for s in settings:  # every error before any output
                check_sweep(cfg, args.sweep, values, s)
            results = [sweep(cfg, s, args.sweep, values, args.results, args.force)
                       for s in settings]
            doc = {"config": asdict(cfg), "sweeps": results}
            text = "\n\n".join(format_sweep(r) for r in results)
        else:
            result = theorem2.run(cfg, settings, args.results, args.force)
            paths = draw_figure(figure_data(result.pop("trajectories")), args.out)
            doc = {**result, "figure": [str(p) for p in paths]}
            text = "\n\n".join(format_report(r, cfg, r["assumptions"]) for r in doc["settings"].values())
            text += "\n\nfigure: " + ", ".join(map(str, paths))
    except OSError as exc:
        raise OSError(f"cannot write results ({exc}); check --out/--results") from None
    print(json.dumps(finite(doc), default=jsonable, allow_nan=False) if args.json else text)
    return EXIT_FAILED if _failures(doc) else EXIT_OK


def draw_figure(data: dict, out_dir) -> list[Path]:
    """THE one plotting entry point of simulations/: the figure of this command is drawn by
    figures/fig_collapse_rate.py (imported here, at call time, never by the compute path), so that
    one command gives the tables and the figure. tests/test_layers.py allows exactly this import."""
    from figures.fig_collapse_rate import plot
    return plot(data, out_dir)


def _failures(doc) -> list:
    checks = [c for s in doc.get("settings", {}).values() for c in s["checks"]]
    checks += [r for s in doc.get("sweeps", []) for r in s["exponents"]]
    return [c for c in checks if c["passed"] is False]


if __name__ == "__main__":
    raise SystemExit(main())
