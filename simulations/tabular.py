"""Sec. 2.1's tabular model: K-class softmax with free logits for each forget input (equivalently
the linear softmax model pi_theta(.|x) = softmax(theta x) with one-hot inputs x_i = e_i).

GD with step eta on the average GA or NPO loss moves sample i's logits z_i by
eta0 W_i (pi_i - e_{y_i}), eta0 = eta / n_f. Python API:

    fs = [make_forget_set(20, classes=5, rng=np.random.default_rng(s)) for s in range(3)]
    traj = simulate(fs, betas=(0.5, 1, 2), lr=1.0, steps=100_000)

We iterate, exactly, the forget label's margin m = z_y - logsumexp(z_{-y}) (its log-odds) and the
distribution q = softmax(z_{-y}) over the other classes. With u = eta0 W sigma(-m) one GD step is
z_y -= u, z_k += u q_k (k != y), i.e.

    m <- m - u - log A,   q_k <- q_k e^{u q_k} / A,   A = sum_k q_k e^{u q_k},

which stays in range for any horizon (z itself drifts like eta0 t). b = m0 - m grows at the rate
eta0 g (1 - pi_y) W with gain g = 1 + |q|^2 (theory.predictions); the recorded ``gain`` is this g.
``logit_space_gd`` is the explicit K-logit reference the tests compare against.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax

from theory.objectives import log_sigmoid, npo_weight

from .trajectory import Trajectory, simulate_stacked


@dataclass(frozen=True)
class ForgetSet:
    """Initial logits (n_f, K) of each forget input (= theta_init e_i) and forget labels y_i."""

    logits0: np.ndarray
    y: np.ndarray

    def _others(self) -> np.ndarray:
        keep = np.arange(self.logits0.shape[1])[None, :] != self.y[:, None]
        return self.logits0[keep].reshape(len(self.y), -1)

    @property
    def margin0(self) -> np.ndarray:
        forget = self.logits0[np.arange(len(self.y)), self.y]
        return forget - logsumexp(self._others(), axis=1)

    @property
    def others0(self) -> np.ndarray:
        """q at the start: softmax of the non-forget logits, (n_f, K-1)."""
        return softmax(self._others(), axis=1)


def make_forget_set(n_forget: int, classes: int = 5, theta_init_norm: float = 1.0,
                    rng: np.random.Generator | None = None) -> ForgetSet:
    """theta_init in R^{K x n_f} uniform on the sphere of the given (Frobenius) norm; random labels."""
    rng = np.random.default_rng(0) if rng is None else rng
    if n_forget < 1 or classes < 2:
        raise ValueError(f"need n_forget >= 1 and classes >= 2 (got {n_forget}, {classes})")
    if not (np.isfinite(theta_init_norm) and theta_init_norm >= 0):
        raise ValueError(f"theta_init_norm must be >= 0 (got {theta_init_norm})")
    direction = rng.standard_normal((n_forget, classes))
    logits = theta_init_norm * direction / np.linalg.norm(direction)
    return ForgetSet(logits0=logits, y=rng.integers(0, classes, n_forget))


def theorem_assumptions(fs: ForgetSet, lr: float) -> dict:
    """One-hot inputs are exactly orthogonal; the gain replaces gamma_ii (see theory.predictions)."""
    q = fs.others0
    return {"coupling": 0.0, "x_norm_min": 1.0, "x_norm_max": 1.0,
            "theta_init_norm": float(np.linalg.norm(fs.logits0)), "n_forget_le_dim": True,
            "gram_min_eigenvalue": 1.0, "lr_le_1": bool(lr <= 1.0),
            "gain_init_mean": float(np.mean(1.0 + np.sum(q * q, axis=1)))}


class TabularGD:
    """One GD step of the tabular model on stacked margins (seeds, methods, n_f), in place; the
    non-forget distributions q (seeds, methods, n_f, K-1) are this model's own state."""

    setting = "tabular"

    def __init__(self, forget_sets, lr: float):
        shapes = {fs.logits0.shape for fs in forget_sets}
        if len(shapes) != 1:
            raise ValueError("all forget sets must have the same number of samples and classes")
        self.lr = float(lr)
        self.eta0 = lr / shapes.pop()[0]
        self.margin0 = np.stack([fs.margin0 for fs in forget_sets])           # (S, n)
        self.q0 = np.stack([fs.others0 for fs in forget_sets])[:, None]      # (S, 1, n, K-1)

    def prepare(self, shape) -> None:
        self.q = np.ascontiguousarray(np.broadcast_to(self.q0, (*shape, self.q0.shape[-1])))
        self.u, self.total = np.empty(shape), np.empty(shape)
        self.growth = np.empty_like(self.q)
        self.ones = np.ones(self.q.shape[-1])

    def advance(self, margin, logp, weight) -> None:
        u, q, growth, total = self.u, self.q, self.growth, self.total
        np.exp(np.subtract(logp, margin, out=u), out=u)     # 1 - pi_y = sigma(-m) = pi_y e^{-m}
        np.multiply(u, weight, out=u)
        np.multiply(u, self.eta0, out=u)                     # u = eta0 W (1 - pi_y)
        np.multiply(u[..., None], q, out=growth)
        np.exp(growth, out=growth)
        np.multiply(growth, q, out=q)                        # q_k e^{u q_k}
        np.matmul(q, self.ones, out=total)                   # A (a matmul sums faster than sum)
        np.divide(q, total[..., None], out=q)
        np.subtract(margin, u, out=margin)
        np.subtract(margin, np.log(total, out=total), out=margin)

    def gain(self) -> np.ndarray:
        return 1.0 + np.einsum("smnk,smnk->smn", self.q, self.q)


def simulate(forget_sets, betas, lr: float, steps: int, per_decade: int = 40) -> Trajectory:
    """GD on GA and on NPO at each beta, every forget set (seed) at once, recorded log-spaced."""
    return simulate_stacked([TabularGD(forget_sets, lr)], betas, steps, per_decade)[0]


# ---- reference: the same GD on the K free logits, for tests -------------------------------------

def logit_space_gd(fs: ForgetSet, beta: float | None, lr: float, steps: int) -> np.ndarray:
    """Plain GD on the (n_f, K) logits with the closed-form gradient; returns the logits."""
    z = fs.logits0.copy()
    n, rows = len(fs.y), np.arange(len(fs.y))
    onehot = np.eye(z.shape[1])[fs.y]
    logp0 = log_sigmoid(fs.margin0)
    for _ in range(steps):
        logpi = z - logsumexp(z, axis=1, keepdims=True)
        weight = 1.0 if beta is None else npo_weight(logpi[rows, fs.y], logp0, beta)
        # grad of mean W log pi_y w.r.t. z_i is W (e_y - pi_i) / n; GD descends it.
        z -= lr / n * np.atleast_1d(weight)[:, None] * (onehot - np.exp(logpi))
    return z


def margins_of(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The forget label's log-odds z_y - logsumexp(z_{-y}) for each row."""
    return ForgetSet(logits0=logits, y=y).margin0
