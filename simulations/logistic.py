"""Theorem 2's setting: binary logistic regression without bias, unlearned by full-batch GD.

pi_theta(y=1|x) = sigma(<x, theta>), pi_ref = pi_{theta_init}, GD with step eta on the *average* GA or
NPO loss over the n_f forget samples (theory/objectives.py). Python API:

    fs = [make_forget_set("orthogonal", 20, 2000, rng=np.random.default_rng(s)) for s in range(3)]
    traj = simulate(fs, betas=(0.5, 1, 2), lr=1.0, steps=100_000)   # GA + NPO per beta, all seeds

Why iterating n_f numbers is exact: every gradient lies in span{x_i}, so with s_i = 2y_i - 1 the
forget margins m_i = s_i <x_i, theta> move by

    m <- m - eta0 * (S Gamma S) (sigma(-m) * W),     Gamma = X X^T,  eta0 = eta / n_f,

which is the paper's recursion b <- b - eta0 Gamma (Delta * W) with the label signs folded in.
b = m0 - m and ||b||_2 = ||theta - theta_init||_{X^T X}. ``theta_space_gd`` is the d-dimensional
reference the tests compare against.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.objectives import log_sigmoid, npo_weight, sigmoid

from .trajectory import Trajectory, simulate_stacked

DATA_KINDS = ("gaussian", "orthogonal")
LABEL_KINDS = ("random", "ones")


@dataclass(frozen=True)
class ForgetSet:
    """Forget inputs X (n_f, d), labels y in {0, 1}, and the initial (= reference) parameters."""

    X: np.ndarray
    y: np.ndarray
    theta_init: np.ndarray

    @property
    def signs(self) -> np.ndarray:
        return 2.0 * self.y - 1.0

    @property
    def margin0(self) -> np.ndarray:
        return self.signs * (self.X @ self.theta_init)

    @property
    def signed_gram(self) -> np.ndarray:
        """S Gamma S: the Gram matrix with each sample's label sign folded in."""
        s = self.signs
        return s[:, None] * (self.X @ self.X.T) * s[None, :]


def make_forget_set(data: str, n_forget: int, dim: int, theta_init_norm: float = 1.0,
                    labels: str = "random", rng: np.random.Generator | None = None) -> ForgetSet:
    """``gaussian``: x_i ~ N(0, I/d); ``orthogonal``: x_i = e_i. theta_init uniform on a sphere."""
    rng = np.random.default_rng(0) if rng is None else rng
    check_sizes(data, n_forget, dim, theta_init_norm, labels)
    if data == "gaussian":
        X = rng.standard_normal((n_forget, dim)) / np.sqrt(dim)
    else:
        X = np.eye(n_forget, dim)
    direction = rng.standard_normal(dim)
    theta = theta_init_norm * direction / np.linalg.norm(direction)
    y = rng.integers(0, 2, n_forget).astype(np.float64) if labels == "random" else np.ones(n_forget)
    return ForgetSet(X=X, y=y, theta_init=theta)


def check_sizes(data, n_forget, dim, theta_init_norm, labels) -> None:
    if data not in DATA_KINDS:
        raise ValueError(f"unknown data {data!r}; use one of {', '.join(DATA_KINDS)}")
    if labels not in LABEL_KINDS:
        raise ValueError(f"unknown labels {labels!r}; use one of {', '.join(LABEL_KINDS)}")
    if n_forget < 1 or dim < 1:
        raise ValueError(f"need n_forget >= 1 and dim >= 1 (got {n_forget}, {dim})")
    if data == "orthogonal" and dim < n_forget:
        raise ValueError(f"orthogonal data needs dim >= n_forget (got dim={dim} < {n_forget}); "
                         f"raise --dim or use --data gaussian")
    if not (np.isfinite(theta_init_norm) and theta_init_norm >= 0):
        raise ValueError(f"theta_init_norm must be >= 0 (got {theta_init_norm})")


def theorem_assumptions(fs: ForgetSet, lr: float) -> dict:
    """The quantities Theorem 2 assumes about the data and the step size, for this forget set."""
    gram = fs.X @ fs.X.T
    n = len(gram)
    off = np.abs(gram - np.diag(np.diag(gram)))
    norms = np.sqrt(np.diag(gram))
    return {
        "coupling": float(off.max() * n) if n > 1 else 0.0,  # max_{i!=j} |<x_i,x_j>| * n_f
        "x_norm_min": float(norms.min()), "x_norm_max": float(norms.max()),
        "theta_init_norm": float(np.linalg.norm(fs.theta_init)),
        "n_forget_le_dim": bool(n <= fs.X.shape[1]),
        "gram_min_eigenvalue": float(np.linalg.eigvalsh(gram)[0]),
        "lr_le_1": bool(lr <= 1.0),
    }


class LogisticGD:
    """One GD step of the logistic model on stacked margins (seeds, methods, n_f), in place."""

    setting = "logistic"

    def __init__(self, forget_sets, lr: float):
        n = {len(fs.y) for fs in forget_sets}
        if len(n) != 1:
            raise ValueError("all forget sets must have the same number of samples")
        self.lr, n = float(lr), n.pop()
        self.margin0 = np.stack([fs.margin0 for fs in forget_sets])           # (S, n)
        grams = np.stack([fs.signed_gram for fs in forget_sets])              # (S, n, n)
        self.gains = np.einsum("sii->si", grams)[:, None, :]                  # gamma_ii
        self.diagonal = not np.any(grams - self.gains.transpose(0, 2, 1) * np.eye(n))
        eta0 = lr / n
        self.scale, self.coupling = eta0 * self.gains, eta0 * grams

    def prepare(self, shape) -> None:
        self.push = np.empty(shape)

    def advance(self, margin, logp, weight) -> None:
        push = self.push
        np.exp(np.subtract(logp, margin, out=push), out=push)  # 1 - pi(y|x) = sigma(-m) = p e^{-m}
        np.multiply(push, weight, out=push)
        if self.diagonal:                       # orthogonal data: Gamma is diagonal, skip the matmul
            np.multiply(push, self.scale, out=push)
            np.subtract(margin, push, out=margin)
        else:                                   # (S, M, n) @ (S, n, n), Gamma symmetric
            np.subtract(margin, np.matmul(push, self.coupling), out=margin)

    def gain(self) -> np.ndarray:
        return self.gains


def simulate(forget_sets, betas, lr: float, steps: int, per_decade: int = 40) -> Trajectory:
    """GD on GA and on NPO at each beta, every forget set (seed) at once, recorded log-spaced."""
    return simulate_stacked([LogisticGD(forget_sets, lr)], betas, steps, per_decade)[0]


# ---- reference: the same GD in theta-space (d-dimensional), for tests ----------------------------

def theta_space_gd(fs: ForgetSet, beta: float | None, lr: float, steps: int) -> np.ndarray:
    """Plain GD on theta with the closed-form gradient (Eqs. 4-5); returns theta after ``steps``."""
    theta = fs.theta_init.copy()
    s, n = fs.signs, len(fs.y)
    margin0 = fs.margin0
    for _ in range(steps):
        margin = s * (fs.X @ theta)
        weight = 1.0 if beta is None else npo_weight(log_sigmoid(margin), log_sigmoid(margin0), beta)
        # grad of mean W log sigma(m_i) is mean W sigma(-m_i) s_i x_i; GD descends it.
        theta -= lr / n * ((weight * sigmoid(-margin) * s) @ fs.X)
    return theta
