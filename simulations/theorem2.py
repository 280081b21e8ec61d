"""Theorem 2 in numbers, the one entry point: GA drifts from the initial model linearly in the step
count, NPO only logarithmically, at the rates theory/predictions.py states.

    from simulations import theorem2
    result = theorem2.run(theorem2.Config())     # both settings: reports (fits vs theory), trajectories
    theorem2.sweep(cfg, "logistic", "n_forget", (5, 10, 20, 40, 80))   # scaling exponents
    python -m simulations.collapse_rate          # the same as tables + the figure (its command line)

Where the pieces live (read in this order):
  theory/predictions.py          the predictions: GA's slope g eta / sqrt(n_f), NPO's log-slope
                                 sqrt(n_f) / beta, leading-order and exact-flow trajectories
  theory/derivations/theorem2.py the machine-checked derivation of the setting and of those rates
  simulations/logistic.py        the logistic model of Theorem 2 (gradient, alpha recursion)
  simulations/tabular.py         the tabular softmax model of Sec. 2.1
  simulations/trajectory.py      full-batch GD of GA and NPO(beta), all seeds stacked, log-spaced records
  theory/fits.py                 least-squares fits (slope vs t, vs log t, power laws), crossing rule
  simulations/rates.py           measured rates beside the predictions, with the claimed tolerances
  this module                    the runs (configuration, cache, sweeps) and what the figure draws
  simulations/theorem2_report.py the text tables; simulations/collapse_rate.py the command line
  figures/fig_collapse_rate.py   the figure (||b|| vs t, predictions as thin grey lines)

Runs full-batch GD on GA and on NPO (one run per beta, all seeds stacked) in the logistic model of
Theorem 2 and in the tabular softmax model of Sec. 2.1 (defaults: orthogonal data, n_f = 20,
eta = 1, beta in {0.5, 1, 2}, 1e5 steps, 3 seeds). Trajectories are cached in ``results`` as
``collapse_rate_<setting>-<hash>.npz``, keyed by the config and the code that produced them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from infra.cache import cached
from infra.files import DEFAULT_RESULTS_DIR

from . import logistic, rates, tabular
from .trajectory import Trajectory, check_run, record_schedule, simulate_stacked

__all__ = ["SETTINGS", "SWEEPS", "QUICK", "Config", "forget_sets", "simulate", "simulate_settings",
           "assumptions", "run", "sweep", "check_sweep", "figure_data"]

SETTINGS = ("logistic", "tabular")
SWEEPS = {"n_forget": (5, 10, 20, 40, 80), "beta": (0.25, 0.5, 1.0, 2.0, 4.0),
          "lr": (0.125, 0.25, 0.5, 1.0)}


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
    key = {**asdict(cfg), "setting": setting}
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

def run(cfg: Config, settings=SETTINGS, results=DEFAULT_RESULTS_DIR, force=False) -> dict:
    """Both halves of the comparison per setting: the report (fits, predictions, checks; see
    simulations/rates.py ``analyse``) with Theorem 2's assumptions, and the trajectories."""
    cfg.validate(settings)
    trajs = simulate_settings(cfg, settings, results, force)
    reports = [rates.analyse(t, cfg.t_fit, exact=t.setting == "logistic" and cfg.data == "orthogonal")
               for t in trajs]
    return {"config": asdict(cfg), "trajectories": trajs,
            "settings": {r["setting"]: {**r, "assumptions": assumptions(cfg, s)}
                         for r, s in zip(reports, settings)}}


def figure_data(trajs: list[Trajectory]) -> dict:
    """What figures/fig_collapse_rate.py draws, per setting: ||b|| per method (seed mean, min, max)
    and theory's leading-order ||b|| (GA's line, NPO's logarithmic asymptote; theory/predictions.py)
    at every recorded step."""
    out = {}
    for traj in trajs:
        t, norm = traj.steps[1:], traj.norm[:, :, 1:]
        predicted = np.array([[rates.leading_order_norm(traj, j, [step], k + 1)[:, 0].mean()
                               for k, step in enumerate(t)] for j in range(len(traj.labels))])
        out[traj.setting] = {"steps": t, "labels": list(traj.labels), "mean": norm.mean(0),
                             "min": norm.min(0), "max": norm.max(0), "predicted": predicted,
                             "betas": [float(b) for b in traj.betas]}
    return out


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
