"""Theorem 2 in numbers: GA drifts from the initial model linearly in the step count, NPO only
logarithmically, at the rates theory/predictions.py states.

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
Writes ``collapse_rate.png``/``.pdf`` into --out and caches trajectories in --results as
``collapse_rate_<setting>-<hash>.npz``. Exit status: 0, 1 if a claim fails, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from figures.io import DEFAULT_RESULTS_DIR, cached

from . import logistic, rates, tabular
from .trajectory import Trajectory, check_run, record_schedule, simulate_stacked

SETTINGS = ("logistic", "tabular")
SWEEPS = {"n_forget": (5, 10, 20, 40, 80), "beta": (0.25, 0.5, 1.0, 2.0, 4.0),
          "lr": (0.125, 0.25, 0.5, 1.0)}
RESULT_VERSION = 1                # bump when the simulation changes what it stores


@dataclass(frozen=True)
class Config:
    data: str = "orthogonal"
    n_forget: int = 20
    dim: int = 2000
    beta: tuple = (0.5, 1.0, 2.0)
    lr: float = 1.0
    steps: int = 100_000
    seeds: int = 3
    seed: int = 0
    theta_init_norm: float = 1.0
    labels: str = "random"
    classes: int = 5
    fit_from: float = 0.0         # 0: the last two decades, t >= steps / 100
    per_decade: int = 40

    @property
    def t_fit(self) -> float:
        return self.fit_from if self.fit_from > 0 else max(self.steps / 100, 1.0)

    def validate(self, settings=SETTINGS) -> None:
        check_run(self.beta, self.lr, self.steps)
        if "logistic" in settings:
            logistic.check_sizes(self.data, self.n_forget, self.dim, self.theta_init_norm,
                                 self.labels)
        elif not (self.n_forget >= 1 and self.theta_init_norm >= 0):
            raise ValueError("need --n-forget >= 1 and --theta-init-norm >= 0")
        if self.seeds < 1 or self.seed < 0 or self.classes < 2 or self.per_decade < 1:
            raise ValueError("need --seeds >= 1, --seed >= 0, --classes >= 2, --per-decade >= 1")
        if not 0 <= self.fit_from < self.steps:
            raise ValueError(f"--fit-from must be in [0, steps) (got {self.fit_from})")
        if np.count_nonzero(record_schedule(self.steps, self.per_decade) >= self.t_fit) < 3:
            raise ValueError(f"fewer than 3 records at t >= {self.t_fit:g} to fit; lower "
                             f"--fit-from or raise --per-decade")


QUICK = dict(steps=10_000, seeds=2)


# ---- computing -----------------------------------------------------------------------------------

def forget_sets(cfg: Config, setting: str) -> list:
    """One forget set per seed; each setting draws from its own stream of the seed."""
    rngs = [np.random.default_rng([cfg.seed + s, SETTINGS.index(setting)]) for s in range(cfg.seeds)]
    if setting == "logistic":
        return [logistic.make_forget_set(cfg.data, cfg.n_forget, cfg.dim, cfg.theta_init_norm,
                                         cfg.labels, rng) for rng in rngs]
    return [tabular.make_forget_set(cfg.n_forget, cfg.classes, cfg.theta_init_norm, rng)
            for rng in rngs]


def simulate(cfg: Config, setting: str, results=DEFAULT_RESULTS_DIR, force=False) -> Trajectory:
    """The recorded GD trajectories of one setting, from the result cache when it holds them."""
    return simulate_settings(cfg, (setting,), results, force)[0]


def simulate_settings(cfg: Config, settings, results=DEFAULT_RESULTS_DIR, force=False):
    """Trajectories of several settings; those not cached are stepped together in one loop."""
    fresh: dict[str, Trajectory] = {}

    def compute(i):
        def run():
            if settings[i] not in fresh:  # first miss: step this and every later setting at once
                todo = settings[i:]
                models = [_model(cfg, s) for s in todo]
                fresh.update(zip(todo, simulate_stacked(models, cfg.beta, cfg.steps,
                                                        cfg.per_decade)))
            return fresh[settings[i]].to_arrays()
        return run

    if results is None:
        return [Trajectory.from_arrays(compute(i)()) for i in range(len(settings))]
    return [Trajectory.from_arrays(cached(f"collapse_rate_{s}", _cache_key(cfg, s), compute(i),
                                          results, force))
            for i, s in enumerate(settings)]


def _model(cfg: Config, setting: str):
    model = logistic.LogisticGD if setting == "logistic" else tabular.TabularGD
    return model(forget_sets(cfg, setting), cfg.lr)


def _cache_key(cfg: Config, setting: str) -> dict:
    key = {**asdict(cfg), "setting": setting, "version": RESULT_VERSION}
    if setting == "tabular":  # the tabular model has no input data
        key.update(data=None, dim=None, labels=None)
    else:
        key.update(classes=None)
    return key


def assumptions(cfg: Config, setting: str) -> dict:
    """Theorem 2's assumptions for the data of every seed (worst case over seeds)."""
    module = logistic if setting == "logistic" else tabular
    per_seed = [module.theorem_assumptions(fs, cfg.lr) for fs in forget_sets(cfg, setting)]
    worst = {"coupling": max, "x_norm_min": min, "x_norm_max": max, "theta_init_norm": max,
             "gram_min_eigenvalue": min, "gain_init_mean": min}
    return {k: (worst[k](p[k] for p in per_seed) if k in worst else all(p[k] for p in per_seed))
            for k in per_seed[0]}


# ---- sweeps --------------------------------------------------------------------------------------

def sweep(cfg: Config, setting: str, param: str, values, results=DEFAULT_RESULTS_DIR,
          force=False) -> dict:
    """Fitted rates over a grid of one parameter and their scaling exponents against theory's.

    Runs over n_f or eta cover the same span of theory's clock eta t / n_f (the run with the most
    steps per unit of it gets ``cfg.steps``, the others proportionally fewer, fit windows alike):
    the rates are asymptotic, and at equal clock time their finite-time corrections are equal, so
    they cancel in the exponents instead of masquerading as a scaling law.
    """
    check_sweep(cfg, param, values, setting)
    if param == "beta":  # every beta is a column of one stacked run
        cfgs = [replace(cfg, beta=tuple(float(v) for v in values))]
    else:
        cast = int if param == "n_forget" else float
        cfgs = [replace(cfg, **{param: cast(v)}) for v in values]
        clock = np.array([c.n_forget / c.lr for c in cfgs])  # steps per unit of eta t / n_f
        share = clock / clock.max()
        cfgs = [replace(c, steps=max(10, int(round(cfg.steps * k))), fit_from=cfg.fit_from * k)
                for c, k in zip(cfgs, share)]
    runs = [simulate(c, setting, results, force) for c in cfgs]
    out = rates.sweep_exponents(param, values, runs, [c.t_fit for c in cfgs])
    return {"setting": setting, "steps": [c.steps for c in cfgs], **out}


def check_sweep(cfg: Config, param: str, values, setting: str) -> None:
    if len(values) < 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"--values needs at least two positive numbers for a sweep (got {values})")
    if param == "n_forget":
        for v in values:
            if not float(v).is_integer():
                raise ValueError(f"n_forget values must be whole numbers (got {v})")
            replace(cfg, n_forget=int(v)).validate((setting,))


# ---- presenting ----------------------------------------------------------------------------------

def _verdict(passed) -> str:
    return "info" if passed is None else ("PASS" if passed else "FAIL")


def format_report(report: dict, cfg: Config, facts: dict) -> str:
    setting = report["setting"]
    where = (f"{cfg.data} data, d={cfg.dim}" if setting == "logistic"
             else f"K={cfg.classes} classes, free logits")
    lines = [f"== {setting}: {where}, n_f={cfg.n_forget}, eta={cfg.lr:g}, {cfg.steps} GD steps, "
             f"{cfg.seeds} seed(s); fits over t >= {report['t_fit']:g} ==",
             f"{'method':<14} {'law':<13} {'fitted slope':>13} {'theory':>11} {'rel.err':>8} "
             f"{'R^2 (min)':>11}   ||b(t={report['t_check']:.0f})|| meas. / theory"]
    for m in report["methods"]:
        fit, pred = m["fit"], m["prediction"]
        extra = (f"; exact flow {pred['norm_at_t_check_flow']:.5g}"
                 if "norm_at_t_check_flow" in pred else "")
        lines.append(f"{m['label']:<14} {m['law']:<13} {fit['slope']:>13.6g} {pred['slope']:>11.6g} "
                     f"{fit['slope'] / pred['slope'] - 1:>+8.2%} {fit['r2_min']:>11.7f}   "
                     f"{m['norm_at_t_check']:.5g} / {pred['norm_at_t_check']:.5g}{extra}")
    lines.append("(NPO's log-slope reaches sqrt(n_f)/beta only as t -> inf: its corrections decay like "
                 "t^-min(1, 1/beta), so finite windows overshoot, most for large beta)")
    if setting == "tabular":
        lines.append("(tabular: NPO also drifts q towards one-hot, slowly raising the gain 1+|q|^2 "
                     "and with it the log-slope; theory's NPO ||b|| uses the recorded gain)")
    th = report["thresholds"]
    if th["tau"]:
        lines += ["", "steps to reach ||b|| = tau = delta*sqrt(n_f), and NPO/GA ratio "
                  "('-': not within the horizon):",
                  f"{'delta':>6} {'tau':>8}" + "".join(f"{r['label']:>22}" for r in th["rows"])]
        ga_steps = th["rows"][0]["steps"]
        for i, (delta, tau) in enumerate(zip(th["delta"], th["tau"])):
            cells = []
            for r in th["rows"]:
                t = r["steps"][i]
                text = "-" if not np.isfinite(t) else (
                    f"{t:.4g}" if r["beta"] is None else f"{t:.3g} (x{t / ga_steps[i]:.3g})")
                cells.append(text.rjust(22))
            lines.append(f"{delta:>6g} {tau:>8.3g}" + "".join(cells))
        for law in th["laws"]:
            basis = f"g = {law['gain']:.3g}" if "gain" in law else "asymptotic"
            lines.append(f"  {law['label']:<14} {law['law']:<22} a = {law['slope']:.4g}  "
                         f"(theory, {basis}: {law['theory']:.4g}; R^2 {law['r2']:.5f})")
    lines += ["", "Theorem 2 assumptions: max_{i!=j}|<x_i,x_j>|*n_f = "
              f"{facts['coupling']:.3g}, |x_i| in [{facts['x_norm_min']:.3g}, "
              f"{facts['x_norm_max']:.3g}], |theta_init| = {facts['theta_init_norm']:.3g}, "
              f"n_f <= d: {_yes(facts['n_forget_le_dim'])}, eig_min(XX^T) = "
              f"{facts['gram_min_eigenvalue']:.3g}, eta <= 1: {_yes(facts['lr_le_1'])}"
              + (f"; initial gain 1+|q|^2 = {facts['gain_init_mean']:.3g} (-> 2 under GA)"
                 if "gain_init_mean" in facts else "")]
    lines.append("checks:")
    for c in report["checks"]:
        lines.append(f"  [{_verdict(c['passed'])}] {c['name']}: {c['value']:.6g}")
    return "\n".join(lines)


def _yes(flag) -> str:
    return "yes" if flag else "NO"


def format_sweep(result: dict) -> str:
    p, rows = result["param"], result["exponents"]
    lines = [f"== sweep {p} ({result['setting']}); fitted slope / theory per value ==",
             f"{p:>10} {'steps':>8}" + "".join(f"{r['quantity'].split(' slope')[0]:>24}"
                                               for r in rows)]
    steps = result["steps"] * len(result["values"]) if p == "beta" else result["steps"]
    for i, (v, n) in enumerate(zip(result["values"], steps)):
        lines.append(f"{v:>10g} {n:>8}" + "".join(
            f"{r['measured'][i]:.4g} / {r['predicted'][i]:.4g}".rjust(24) for r in rows))
    lines.append("scaling exponents:")
    for row in rows:
        lines.append(f"  [{_verdict(row['passed'])}] {row['quantity']:<38} exponent in {p}: "
                     f"{row['exponent']:+.4f}  theory {row['theory']:+.4f}  (tol {row['tolerance']:.3g},"
                     f" R^2 {row['r2']:.5f})")
    return "\n".join(lines)


def plot(trajs: list[Trajectory], out_dir) -> list[Path]:
    """||b|| vs steps for GA and each NPO beta, linear axes (left) and log-x (right), per setting."""
    from matplotlib.ticker import NullLocator

    from figures.style import TWO_COLUMN, figure, method_style, save
    fig, axes = figure(ncols=2, nrows=len(trajs), width=TWO_COLUMN, height=2.4 * len(trajs))
    dashes = ["-", "--", ":", "-."]
    for row, traj in zip(axes, trajs):
        t, norm = traj.steps[1:], traj.norm[:, :, 1:]
        for j, label in enumerate(traj.labels):
            style = method_style("GA" if j == 0 else "NPO", marker=None)
            if j:
                style["linestyle"] = dashes[(j - 1) % len(dashes)]
            for ax in row:
                ax.plot(t, norm[:, j].mean(0), label=label, **style)
                ax.fill_between(t, norm[:, j].min(0), norm[:, j].max(0), color=style["color"],
                                alpha=0.2, linewidth=0)
        row[0].set_title(f"{traj.setting}: linear axes")
        row[1].set_title(f"{traj.setting}: log-x (NPO straight = logarithmic)")
        row[1].set_xscale("log")
        row[1].xaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks cost ~0.4 s to lay out
        row[1].set_ylim(0, 1.3 * norm[:, 1:].max() if norm.shape[1] > 1 else None)
        for ax in row:
            ax.set_xlabel("GD step t")
        row[0].set_ylabel("||b||  (logit change on forget set)")
        row[0].legend(loc="upper left", frameon=False)
    return save(fig, out_dir, "collapse_rate")


# ---- command line --------------------------------------------------------------------------------

class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(prog="python -m simulations.collapse_rate", description=__doc__,
                formatter_class=_Formatter)
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
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    return p


def config_from_args(args) -> Config:
    given = {f.name: getattr(args, f.name) for f in fields(Config)}
    given["beta"] = tuple(given["beta"])
    if args.quick:
        defaults = Config()
        given.update({k: v for k, v in QUICK.items() if given[k] == getattr(defaults, k)})
    return Config(**given)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    settings = SETTINGS if args.setting == "all" else (args.setting,)
    try:
        cfg.validate(settings)
        if args.sweep:
            values = args.values or SWEEPS[args.sweep]
            for s in settings:  # every error before any output
                check_sweep(cfg, args.sweep, values, s)
            results = [sweep(cfg, s, args.sweep, values, args.results, args.force)
                       for s in settings]
            doc = {"config": asdict(cfg), "sweeps": results}
            text = "\n\n".join(format_sweep(r) for r in results)
        else:
            trajs = simulate_settings(cfg, settings, args.results, args.force)
            reports = [rates.analyse(t, cfg.t_fit, exact=t.setting == "logistic"
                                     and cfg.data == "orthogonal") for t in trajs]
            facts = [assumptions(cfg, s) for s in settings]
            paths = plot(trajs, args.out)
            doc = {"config": asdict(cfg), "figure": [str(p) for p in paths],
                   "settings": {r["setting"]: {**r, "assumptions": f}
                                for r, f in zip(reports, facts)}}
            text = "\n\n".join(format_report(r, cfg, f) for r, f in zip(reports, facts))
            text += "\n\nfigure: " + ", ".join(map(str, paths))
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write results ({exc}); check --out/--results",
              file=sys.stderr)
        return 2
    print(json.dumps(_finite(doc), default=_plain, allow_nan=False) if args.json else text)
    failed = _failures(doc)
    return 1 if failed else 0


def _failures(doc) -> list:
    checks = [c for s in doc.get("settings", {}).values() for c in s["checks"]]
    checks += [r for s in doc.get("sweeps", []) for r in s["exponents"]]
    return [c for c in checks if c["passed"] is False]


def _finite(x):
    """JSON has no NaN: thresholds never reached become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)) and not np.isfinite(x):
        return None
    return x


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
