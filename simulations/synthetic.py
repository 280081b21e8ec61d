"""Section 4's synthetic experiments (Figures 3, 4, 9; Table 1) and their check against the paper.

    python -m simulations.synthetic                  # Fig 4/9 runs: per-method summary table
    python -m simulations.synthetic --check-paper    # claim | paper | measured | tolerance | pass
    python -m simulations.synthetic --check-paper --json
    python -m simulations.synthetic --methods all --alphas 1 --seeds 1000 2000

Results are cached under results/ (``synthetic-fig4-<hash>.npz``, ``synthetic-fig3-<hash>.npz``,
one ``synthetic-fit-<hash>.npz`` per (seed, alpha)); --force recomputes. Seeds 1000..5000 feed
``np.random.default_rng`` (the authors seed torch with the same numbers, so instances differ).
Work runs in ``--workers`` spawned processes: first the missing fits (groups of instances), then
one unlearning task per alpha (or per group of methods when there are fewer alphas than workers);
a task moves all its methods (and, for forget-only methods, all its seeds) as one batch of
parameter vectors (simulations/synthetic_methods.py).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy.special import expit

from infra.cache import cached
from infra.cli import EXIT_FAILED, EXIT_OK, parser, run
from infra.files import DEFAULT_RESULTS_DIR
from simulations.synthetic_data import (PAPER_SEEDS, DataConfig, FitNotConverged, draw_instance, fit_and_store,
                                        load_fit)
from simulations.synthetic_methods import (FIGURE_METHODS, METHODS, LogitGradients, MethodSpec,
                                           distances, table1_specs, unlearn)

FIG3_BETAS = (0.01, 0.1, 0.2, 0.5, 1.0)
QUICK_SEEDS = (1000, 2000)


@dataclass(frozen=True)
class Fig4Config:
    """Figures 4 and 9: Table 1's methods from the reference model, 2000 steps, eval every 25."""
    seeds: tuple = PAPER_SEEDS
    alphas: tuple = (1.0, 0.0)
    methods: tuple = FIGURE_METHODS
    steps: int = 2000
    eval_every: int = 25
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        _check_run(self)

    def specs(self, alpha: float) -> list[MethodSpec]:
        return table1_specs(self.methods, alpha)

    @classmethod
    def quick(cls, **kw) -> "Fig4Config":
        return cls(**{"seeds": QUICK_SEEDS, **kw})


@dataclass(frozen=True)
class Fig3Config:
    """Figure 3: GA and NPO(beta) at one lr (5e-4), alpha = 1, 10000 steps, eval every 5."""
    seeds: tuple = PAPER_SEEDS
    betas: tuple = FIG3_BETAS
    lr: float = 5e-4
    steps: int = 10000
    eval_every: int = 5
    alpha: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        _check_run(self)

    @property
    def alphas(self) -> tuple:
        return (self.alpha,)

    def specs(self, alpha: float) -> list[MethodSpec]:
        return [MethodSpec("GA", self.lr)] + [
            MethodSpec("NPO", self.lr, b, label=f"NPO beta={b:g}") for b in self.betas]

    @classmethod
    def quick(cls, **kw) -> "Fig3Config":
        return cls(**{"seeds": QUICK_SEEDS, "steps": 2000, "eval_every": 10, **kw})


def _check_run(cfg) -> None:
    if not (cfg.steps >= 1 and cfg.eval_every >= 1):
        raise ValueError(f"steps and eval_every must be >= 1 (got {cfg.steps}, {cfg.eval_every})")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds must be distinct and non-empty (got {cfg.seeds})")


def _config_dict(cfg) -> dict:
    out = {k: v for k, v in asdict(cfg).items() if k != "data"}
    out["data"] = cfg.data.as_dict()
    out["specs"] = {str(a): [asdict(s) for s in cfg.specs(a)] for a in cfg.alphas}
    return out


# ---- running: fits, then unlearning tasks, in worker processes ---------------------------------------

def run_experiment(cfg, root=DEFAULT_RESULTS_DIR, force: bool = False, workers: int | None = None,
                   metrics: tuple = ("fd", "rd", "fkl")) -> dict[str, np.ndarray]:
    """Unlearning curves of every (alpha, seed, method): metric arrays (A, S, T, M) and fit diagnostics.

    Stage 1 fits the missing (seed, alpha) reference/retrained pairs (``force``: all of them, once
    per process), in ``workers`` groups. Stage 2 runs one task per alpha, or per group of methods
    when there are fewer alphas than workers, each task covering all seeds.
    """
    workers = default_workers() if workers is None else workers
    keys = [(int(s), float(a)) for a in cfg.alphas for s in cfg.seeds]
    todo = [k for k in keys if (force and (k, cfg.data) not in _REFIT) or load_fit(cfg.data, *k, root) is None]
    if todo:
        _map(_fit_task, [dict(data=cfg.data.as_dict(), keys=g, root=str(root)) for g in _split(todo, workers)],
             workers)
        _REFIT.update((k, cfg.data) for k in todo)
    fits = {k: load_fit(cfg.data, *k, root) for k in keys}
    n_chunks = max(1, workers // len(cfg.alphas))
    chunks = _split(list(range(len(cfg.specs(cfg.alphas[0])))), n_chunks)
    tasks = [dict(data=cfg.data.as_dict(), alpha=float(a), seeds=tuple(cfg.seeds), metrics=tuple(metrics),
                  specs=[asdict(cfg.specs(a)[j]) for j in c], steps=cfg.steps, eval_every=cfg.eval_every,
                  thetas=[(fits[(s, a)]["theta_ref"], fits[(s, a)]["theta_retr"]) for s in cfg.seeds])
             for a in cfg.alphas for c in chunks]
    parts = iter(_map(_unlearn_task, tasks, workers))
    out = {}
    per_alpha = [[next(parts) for _ in chunks] for _ in cfg.alphas]
    for m in metrics:
        out[m] = np.stack([np.concatenate([p[m] for p in row], axis=-1) for row in per_alpha])
    for name in ("grad_norm", "final_loss"):
        out["fit_" + name] = np.array([[fits[(int(s), float(a))][name] for s in cfg.seeds] for a in cfg.alphas])
    out["retr_forget_p1"] = np.stack([row[0]["retr_forget_p1"] for row in per_alpha])
    out.update(steps=np.arange(0, cfg.steps, cfg.eval_every), alphas=np.array(cfg.alphas, float),
               seeds=np.array(cfg.seeds), methods=np.array([s.label for s in cfg.specs(cfg.alphas[0])]))
    return out


_REFIT: set = set()  # (seed, alpha), data config refitted by --force in this process


def _writable(root):
    """Create the result directory up front, so a bad path fails before minutes of work."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return root


_FORCED: set = set()  # results recomputed by force in this process (fig4 and fig9 share one)


def _cached(name: str, cfg, root, force: bool, compute):
    _writable(root)
    key = (name, json.dumps(_config_dict(cfg), sort_keys=True), str(Path(root).resolve()))
    if force:  # once per process: `python -m figures --force` recomputes Fig 4's runs for fig4, not again for fig9
        force = key not in _FORCED
        _FORCED.add(key)
    return cached(name, _config_dict(cfg), compute, root, force)


def fig4_results(cfg: Fig4Config = Fig4Config(), root=DEFAULT_RESULTS_DIR, force=False, workers=None):
    """Figures 4 and 9 (fd, rd, fkl), from the cache when present."""
    return _cached("synthetic-fig4", cfg, root, force, lambda: run_experiment(cfg, root, force, workers))


def fig3_results(cfg: Fig3Config = Fig3Config(), root=DEFAULT_RESULTS_DIR, force=False, workers=None):
    """Figure 3 (fd, rd), from the cache when present."""
    return _cached("synthetic-fig3", cfg, root, force,
                   lambda: run_experiment(cfg, root, force, workers, metrics=("fd", "rd")))


def fig4_data(quick: bool = False, results=DEFAULT_RESULTS_DIR, force: bool = False, workers=None) -> dict:
    """What Figures 4 and 9 draw: ``fig4_results`` at the paper's (or, ``quick``, the CI-sized) config."""
    return fig4_results(Fig4Config.quick() if quick else Fig4Config(), results, force, workers)


def fig3_data(quick: bool = False, results=DEFAULT_RESULTS_DIR, force: bool = False, workers=None) -> dict:
    """What Figure 3 draws: ``fig3_results`` at the paper's (or, ``quick``, the CI-sized) config."""
    return fig3_results(Fig3Config.quick() if quick else Fig3Config(), results, force, workers)


def _fit_task(task: dict) -> None:
    fit_and_store(DataConfig(**task["data"]), task["keys"], task["root"])


def _unlearn_task(task: dict) -> dict[str, np.ndarray]:
    """All seeds of one alpha for a group of methods: GD from theta_ref, then the distances.

    Forget-only methods stack all seeds into one batch (their features are small); methods that
    also use the 1000 retain rows run seed by seed, which keeps each seed's features in cache.
    """
    data = DataConfig(**task["data"])
    specs = [MethodSpec(**s) for s in task["specs"]]
    order = sorted(range(len(specs)), key=lambda j: not specs[j].uses_retain)  # retain users first
    specs_sorted = [specs[j] for j in order]
    back = np.argsort(order)
    seeds = list(task["seeds"])
    group = 1 if specs_sorted[0].uses_retain else len(seeds)
    parts = []
    for lo in range(0, len(seeds), group):
        inst = [draw_instance(data, s, task["alpha"]) for s in seeds[lo:lo + group]]
        thetas = task["thetas"][lo:lo + group]
        parts.append(_unlearn_group(inst, [t[0] for t in thetas], [t[1] for t in thetas], specs_sorted,
                                    task["steps"], task["eval_every"], task["metrics"], back))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _unlearn_group(inst, theta_ref, theta_retr, specs, steps, eval_every, metrics, back):
    theta_ref, theta_retr = np.stack(theta_ref), np.stack(theta_retr)
    ref_f = np.stack([i.z_forget @ t for i, t in zip(inst, theta_ref)])
    ref_r = np.stack([i.z_retain @ t for i, t in zip(inst, theta_ref)])
    labels = [np.stack([getattr(i, name) for i in inst]) for name in ("y_forget", "y_retain", "y_idk")]
    grads = LogitGradients(specs, ref_f, ref_r, *labels, scale=[s.lr for s in specs])
    snaps = unlearn([i.z_forget for i in inst], [i.z_retain for i in inst], theta_ref, grads, steps, eval_every)
    k, n_snap, n_feat, m = snaps.shape
    targets = {"fd": ("z_eval_forget", theta_retr), "rd": ("z_eval_retain", theta_retr),
               "fkl": ("z_eval_forget", theta_ref)}
    out = {name: np.empty((k, n_snap, m)) for name in metrics}
    for j, i in enumerate(inst):
        cols = snaps[j].transpose(1, 0, 2).reshape(n_feat, n_snap * m)
        for name in metrics:
            z_eval, target = getattr(i, targets[name][0]), targets[name][1][j]
            out[name][j] = distances(z_eval, cols, z_eval @ target).reshape(n_snap, m)[:, back]
    out["retr_forget_p1"] = np.array([expit(i.z_eval_forget @ t).mean() for i, t in zip(inst, theta_retr)])
    return out


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _split(items, parts: int) -> list[list]:
    """``items`` in at most ``parts`` contiguous groups of near-equal size."""
    items = list(items)
    n = max(1, min(parts, len(items)))
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


_POOL: dict[int, ProcessPoolExecutor] = {}


def _map(fn, tasks, workers: int):
    """Run tasks in ``workers`` spawned processes (one BLAS thread each), or in-process if 1."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in saved})  # read by numpy at import in the fresh workers
    try:
        if workers not in _POOL:
            _POOL[workers] = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        return list(_POOL[workers].map(fn, tasks))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@atexit.register
def _close_pools():
    for pool in _POOL.values():
        pool.shutdown(cancel_futures=True)


# ---- summaries, the paper check, command line -------------------------------------------------------

def summary(res: dict, steps=(0, 300, 1000, 1975), metrics=("fd", "rd", "fkl")) -> list[dict]:
    """Per (alpha, method, metric, step): per-seed values, mean, sd (ddof=1) and median."""
    rows = []
    for a, alpha in enumerate(res["alphas"]):
        for j, method in enumerate(res["methods"]):
            for metric in metrics:
                if metric not in res:
                    continue
                for step in steps:
                    t = int(np.argmin(np.abs(res["steps"] - step)))
                    x = res[metric][a, :, t, j]
                    rows.append(dict(alpha=float(alpha), method=str(method), metric=metric,
                                     step=int(res["steps"][t]), per_seed=[float(v) for v in x],
                                     mean=float(x.mean()), sd=float(x.std(ddof=1)) if x.size > 1 else 0.0,
                                     median=float(np.median(x))))
    return rows


def check_paper(fig4: dict, fig3: dict | None) -> list[dict]:
    from simulations.synthetic_checks import fig3_checks, fig4_checks
    return fig4_checks(fig4) + (fig3_checks(fig3) if fig3 is not None else [])


PROG = "python -m simulations.synthetic"


def build_parser() -> argparse.ArgumentParser:
    p = parser(PROG, __doc__)
    p.add_argument("--check-paper", action="store_true",
                   help="run Figs 3/4/9 and print claim | paper | measured | tolerance | pass")
    p.add_argument("--quick", action="store_true", help=f"seeds {QUICK_SEEDS}; Fig 3 2000 steps, eval every 10")
    p.add_argument("--seeds", type=int, nargs="+", default=argparse.SUPPRESS,
                   help=f"seeds for np.random.default_rng (default: {' '.join(map(str, PAPER_SEEDS))})")
    p.add_argument("--alphas", type=float, nargs="+", default=argparse.SUPPRESS, choices=[0.0, 1.0],
                   help="gaps between forget and retain means (default: 1 0, Table 1's two)")
    p.add_argument("--methods", nargs="+", default=list(FIGURE_METHODS),
                   help=f"any of {' '.join(METHODS)}, or 'all'")
    p.add_argument("--workers", type=int, default=default_workers(), help="worker processes")
    p.add_argument("--results", default=str(DEFAULT_RESULTS_DIR), help="result cache directory")
    p.add_argument("--force", action="store_true", help="recompute cached results (and fits)")
    return p


def configs_from_args(args) -> tuple[Fig4Config, Fig3Config]:
    methods = tuple(METHODS) if args.methods == ["all"] else tuple(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} or 'all'")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1 (got {args.workers})")
    fig4 = Fig4Config.quick() if args.quick else Fig4Config()
    fig3 = Fig3Config.quick() if args.quick else Fig3Config()
    fig4 = replace(fig4, methods=methods)
    if getattr(args, "seeds", None):
        fig4, fig3 = replace(fig4, seeds=tuple(args.seeds)), replace(fig3, seeds=tuple(args.seeds))
    if getattr(args, "alphas", None):
        fig4 = replace(fig4, alphas=tuple(dict.fromkeys(args.alphas)))
    return fig4, fig3


def main(argv: list[str] | None = None) -> int:
    return run(PROG, _main, build_parser().parse_args(argv), failures=(FitNotConverged,))


def _main(args) -> int:
    fig4_cfg, fig3_cfg = configs_from_args(args)
    fig4 = fig4_results(fig4_cfg, args.results, args.force, args.workers)
    if not args.check_paper:
        rows = summary(fig4)
        print(json.dumps({"config": _config_dict(fig4_cfg), "summary": rows}) if args.json
              else _format_summary(rows))
        return EXIT_OK
    fig3 = fig3_results(fig3_cfg, args.results, args.force, args.workers) if 1.0 in fig4_cfg.alphas else None
    rows = check_paper(fig4, fig3)
    if args.json:
        print(json.dumps({"seeds": list(fig4_cfg.seeds), "checks": rows}))
    else:
        from simulations.synthetic_checks import format_table
        print(format_table(rows))
    return EXIT_OK if all(r["passed"] is not False for r in rows) else EXIT_FAILED


def _format_summary(rows: list[dict]) -> str:
    lines = ["| alpha | method | metric | step | median | mean +- sd | per seed |", "|---" * 7 + "|"]
    for r in rows:
        seeds = " ".join(f"{v:.3g}" for v in r["per_seed"])
        lines.append(f"| {r['alpha']:g} | {r['method']} | {r['metric']} | {r['step']} | {r['median']:.4g} | "
                     f"{r['mean']:.4g} +- {r['sd']:.2g} | {seeds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
