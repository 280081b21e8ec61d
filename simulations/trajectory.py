"""What the two Theorem-2 settings (logistic, tabular) share: the stack of methods run side by side,
the per-step unlearning weight, the log-spaced recording schedule and the recorded trajectory.

Both settings reduce, exactly, to each forget sample's margin m_i (log-odds of its forget label):
log pi(y_i|x_i) = log sigma(m_i), and GD on the average GA/NPO loss moves m_i down with the weight
W_i = 1 (GA) or npo_weight (NPO). ``b_i = m_i(0) - m_i(t) >= 0`` is the divergence the paper measures
(||b||_2 = ||theta - theta_init||_{X^T X} in the logistic model).

Arrays are stacked as (seeds, methods, ...) with method 0 = GA and methods 1.. = NPO at each beta,
so one numpy call per step advances every seed, beta and GA together.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from theory.objectives import ga_loss, log_sigmoid, npo_loss, npo_weight


def method_labels(betas) -> list[str]:
    return ["GA"] + [f"NPO beta={b:g}" for b in betas]


def beta_column(betas) -> np.ndarray:
    """Per-method beta shaped (1, methods, 1); GA's slot holds a placeholder its weight overrides."""
    return np.array([1.0, *betas], dtype=np.float64)[None, :, None]


def forget_logprob_and_weight(margin, logp0, betas_col):
    """log pi(y|x) = log sigma(m) and each method's gradient weight (GA: 1, NPO: 2 sigma(beta R))."""
    logp = log_sigmoid(margin)
    weight = npo_weight(logp, logp0, betas_col)
    weight[:, 0] = 1.0  # method 0 is GA: the NPO weight's beta -> 0 limit, exactly 1
    return logp, weight


def forget_losses(logp, logp0, betas) -> np.ndarray:
    """The loss each method minimises, shape (seeds, methods), from theory.objectives."""
    seeds, methods = logp.shape[:2]
    out = np.empty((seeds, methods))
    for s in range(seeds):
        out[s, 0] = ga_loss(logp[s, 0])
        for j, beta in enumerate(betas, start=1):
            out[s, j] = npo_loss(logp[s, j], logp0[s, 0], beta)
    return out


def record_schedule(steps: int, per_decade: int = 40) -> np.ndarray:
    """Step 0, then ``per_decade`` log-spaced steps per decade (powers of ten included), then ``steps``."""
    top = int(np.floor(per_decade * np.log10(steps) + 1e-9))
    grid = np.round(10.0 ** (np.arange(top + 1) / per_decade))
    return np.unique(np.concatenate([[0, steps], grid])).astype(np.int64)


def run_schedule(schedule: np.ndarray, step: Callable[[], None], record: Callable[[int], None]):
    """Call ``step`` once per GD step and ``record(k)`` at schedule[k]; no per-step bookkeeping."""
    done = 0
    for k, target in enumerate(schedule):
        for _ in range(int(target) - done):
            step()
        done = int(target)
        record(k)


def check_run(betas, lr, steps) -> None:
    if not all(np.isfinite(b) and b > 0 for b in betas):
        raise ValueError(f"every beta must be > 0 (got {list(betas)}); GA is always run as well")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be > 0 (got {lr})")
    if steps < 10:
        raise ValueError(f"steps must be >= 10 for a rate to be fitted (got {steps})")


def simulate_stacked(models, betas, steps: int, per_decade: int = 40) -> list["Trajectory"]:
    """Run GD for one or more models (settings) in lockstep, one Trajectory per model.

    A model (``logistic.LogisticGD``, ``tabular.TabularGD``) owns a block of seeds of the stacked
    margins (seeds, methods, n_f) and knows how one GD step moves them given log pi(y|x) and W;
    the log-probs and weights of every block come from one call into theory.objectives per step,
    which is most of a step's cost.
    """
    for model in models:
        check_run(betas, model.lr, steps)
    if len({model.margin0.shape[1] for model in models}) != 1:
        raise ValueError("models stepped together need the same number of forget samples")
    methods = 1 + len(betas)
    bounds = np.cumsum([0] + [len(model.margin0) for model in models])
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    margin0 = np.concatenate([model.margin0 for model in models])          # (S, n)
    shape = (len(margin0), methods, margin0.shape[1])
    margin = np.ascontiguousarray(np.broadcast_to(margin0[:, None, :], shape))
    # full-shape constants: same-shape numpy ops are cheaper than broadcasting ones, every step
    logp0 = np.ascontiguousarray(np.broadcast_to(log_sigmoid(margin0)[:, None, :], shape))
    betas_col = np.ascontiguousarray(np.broadcast_to(beta_column(betas), shape))
    schedule = record_schedule(steps, per_decade)
    recorders = []
    for model, block in zip(models, blocks):
        model.prepare(margin[block].shape)
        recorders.append(Recorder(schedule, margin[block].shape, model.margin0, betas))
    pairs = list(zip(models, blocks))

    def step():
        logp, weight = forget_logprob_and_weight(margin, logp0, betas_col)
        for model, block in pairs:
            model.advance(margin[block], logp[block], weight[block])

    def record(k):
        for (model, block), rec in zip(pairs, recorders):
            rec(k, margin[block], model.gain())

    run_schedule(schedule, step, record)
    return [rec.trajectory(model.setting, model.lr) for model, rec in zip(models, recorders)]


@dataclass
class Trajectory:
    """Recorded GD trajectories of one setting; axes (seeds, methods, records[, samples])."""

    setting: str
    steps: np.ndarray      # (R,) recorded GD steps, starting at 0
    betas: np.ndarray      # (M-1,) NPO betas; method 0 is GA
    lr: float
    b: np.ndarray          # (S, M, R, n) per-sample margin drop m0 - m
    loss: np.ndarray       # (S, M, R) the minimised loss
    weight: np.ndarray     # (S, M, R, n) W_i (1 for GA)
    gain: np.ndarray       # (S, M, R, n) the ODE gain g of theory.predictions at each record
    margin0: np.ndarray    # (S, n) initial margins m0

    @property
    def norm(self) -> np.ndarray:
        """||b||_2 per seed, method and record: (S, M, R)."""
        return np.sqrt(np.einsum("smrn,smrn->smr", self.b, self.b))

    @property
    def n_forget(self) -> int:
        return self.b.shape[-1]

    @property
    def labels(self) -> list[str]:
        return method_labels(self.betas)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Trajectory":
        kw = {f.name: arrays[f.name] for f in fields(cls)}
        kw["setting"], kw["lr"] = str(kw["setting"]), float(kw["lr"])
        return cls(**kw)


class Recorder:
    """Preallocated record buffers filled by ``record(k)`` from the current margins."""

    def __init__(self, schedule, shape, margin0, betas):
        self.schedule, self.betas = schedule, tuple(betas)
        seeds, methods, n = shape
        self.m0 = margin0[:, None, :]
        self.logp0 = log_sigmoid(self.m0)
        self.betas_col = beta_column(betas)
        r = len(schedule)
        self.b = np.empty((r, seeds, methods, n))
        self.weight = np.empty_like(self.b)
        self.gain = np.empty_like(self.b)
        self.loss = np.empty((r, seeds, methods))

    def __call__(self, k: int, margin: np.ndarray, gain) -> None:
        logp, weight = forget_logprob_and_weight(margin, self.logp0, self.betas_col)
        np.subtract(self.m0, margin, out=self.b[k])
        self.weight[k], self.gain[k] = weight, gain
        self.loss[k] = forget_losses(logp, self.logp0, self.betas)

    def trajectory(self, setting: str, lr: float) -> Trajectory:
        def move(a):  # records axis to third place: (S, M, R, ...)
            return np.ascontiguousarray(np.moveaxis(a, 0, 2))
        return Trajectory(setting=setting, steps=self.schedule, betas=np.array(self.betas, float),
                          lr=float(lr), b=move(self.b), loss=move(self.loss),
                          weight=move(self.weight), gain=move(self.gain), margin0=self.m0[:, 0, :])
