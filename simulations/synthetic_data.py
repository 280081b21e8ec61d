"""Section 4's synthetic data, random-feature model and its 20000-step reference/retrained fits.

Paper-digest section 3. Per seed (``np.random.default_rng(seed)``; the authors seed torch with the
same numbers 1000..5000, so draws differ from theirs), in the authors' order:

    W ~ N(0, 1/d)^{N x d};  retain set;  forget set;  y_idk ~ Bern(0.5)^{n_f};  eval retain;  eval forget

with x = mu + eps, eps ~ N(0, I_d), mu_f = -mu_r = alpha * 1_d, and labels
P(y=1 | x_f) = sigma((x_f - mu_f)^T theta_f + 1), P(y=1 | x_r) = sigma((x_r - mu_r)^T theta_r - 1),
theta_f = -theta_r = 1_d / sqrt(d). Labels depend on eps only, so as in the authors' code the
alpha = 0 and alpha = 1 instances of one seed share W, eps and labels (only the shift differs).

Model: pi_theta(y=1|x) = sigma(theta^T ReLU(W x)), theta in R^N, no bias. Features Z = ReLU(X W^T)
are fixed, so they are computed once per instance. The reference model (forget + retain) and the
retrained model (retain only) are plain full-batch GD on the mean cross-entropy from theta = 0,
20000 steps at lr 0.05, exactly as the paper; both are run side by side on the shared retain rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from infra.cache import cached
from infra.files import DEFAULT_RESULTS_DIR
from theory.objectives import log_sigmoid, nll_loss

PAPER_SEEDS = (1000, 2000, 3000, 4000, 5000)


class FitNotConverged(RuntimeError):
    """The reference or retrained fit ended with a gradient norm above the paper's 1e-2."""


@dataclass(frozen=True)
class DataConfig:
    """Everything that determines one instance's data and its two fitted models."""
    d: int = 16
    n_features: int = 128
    n_forget: int = 200
    n_retain: int = 1000
    n_eval: int = 1000
    fit_steps: int = 20000
    fit_lr: float = 0.05
    fit_max_grad_norm: float = 1e-2

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Instance:
    """Features and labels of one (seed, alpha) instance; labels are 0/1 floats."""
    seed: int
    alpha: float
    z_forget: np.ndarray       # (n_f, N) training forget features
    z_retain: np.ndarray       # (n_r, N)
    z_eval_forget: np.ndarray  # (n_eval, N) fresh draws, used only by the metrics
    z_eval_retain: np.ndarray
    y_forget: np.ndarray
    y_retain: np.ndarray
    y_idk: np.ndarray          # Bern(0.5) "I don't know" labels of the forget samples


def draw_instance(cfg: DataConfig, seed: int, alpha: float) -> Instance:
    """Draw one instance in the authors' order and return its ReLU random features."""
    rng = np.random.default_rng(seed)
    d = cfg.d
    w = rng.standard_normal((cfg.n_features, d)) / np.sqrt(d)
    theta_f = np.ones(d) / np.sqrt(d)

    def sample(n: int, mu: float, theta, intercept: float):
        eps = rng.standard_normal((n, d))
        p1 = 1.0 / (1.0 + np.exp(-(eps @ theta + intercept)))
        y = (rng.random(n) < p1).astype(np.float64)
        return np.maximum((mu + eps) @ w.T, 0.0), y

    z_r, y_r = sample(cfg.n_retain, -alpha, -theta_f, -1.0)
    z_f, y_f = sample(cfg.n_forget, alpha, theta_f, 1.0)
    y_idk = (rng.random(cfg.n_forget) < 0.5).astype(np.float64)
    z_er, _ = sample(cfg.n_eval, -alpha, -theta_f, -1.0)
    z_ef, _ = sample(cfg.n_eval, alpha, theta_f, 1.0)
    return Instance(seed, float(alpha), z_f, z_r, z_ef, z_er, y_f, y_r, y_idk)


def fit_reference_and_retrained(cfg: DataConfig, instances: list[Instance]) -> dict[str, np.ndarray]:
    """Full-batch GD on mean cross-entropy from 0: reference on forget+retain, retrained on retain.

    The two fits of an instance share the feature matrix [Z_r; Z_f]; the retrained column simply
    gives the forget rows weight 0. sigma(s) = (1 + tanh(s/2)) / 2 and the half-parameters
    theta/2 (an exact rescaling) make one step six in-place array operations, with lr folded into
    the residual weights. Instances run one after another (their 1.2 MB of features then stay in
    cache). Returns theta_ref, theta_retr (k, N), the last gradient norms (k, 2), measured as the
    authors do at the final iteration before its update, and the final training losses (k, 2).
    """
    fits = [_fit_one(cfg, inst) for inst in instances]
    return {key: np.stack([f[key] for f in fits]) for key in fits[0]}


def _fit_one(cfg: DataConfig, inst: Instance) -> dict[str, np.ndarray]:
    n_r = cfg.n_retain
    z = np.asfortranarray(np.vstack([inst.z_retain, inst.z_forget]))  # F order: ~10% faster here
    n = z.shape[0]
    y = np.zeros((n, 2))
    y[:n_r, :] = inst.y_retain[:, None]
    y[n_r:, 0] = inst.y_forget
    weight = np.zeros((n, 2))
    weight[:, 0] = 1.0 / n
    weight[:n_r, 1] = 1.0 / n_r
    # residual r = lr/2 * weight * (sigma(s) - y) = half_w * tanh(s/2) + offset
    half_w = 0.25 * cfg.fit_lr * weight
    offset = 0.5 * cfg.fit_lr * weight * (0.5 - y)
    half_theta = np.zeros((cfg.n_features, 2))
    s = np.empty((n, 2))
    step = np.empty((cfg.n_features, 2))
    for _ in range(cfg.fit_steps):
        np.matmul(z, half_theta, out=s)
        np.tanh(s, out=s)
        np.multiply(s, half_w, out=s)
        np.add(s, offset, out=s)
        np.matmul(z.T, s, out=step)
        np.subtract(half_theta, step, out=half_theta)
    theta = 2.0 * half_theta
    grad_norm = np.linalg.norm(step, axis=0) / (0.5 * cfg.fit_lr)  # ref, retr
    for col, name in enumerate(("reference", "retrained")):
        if not grad_norm[col] <= cfg.fit_max_grad_norm:
            raise FitNotConverged(
                f"{name} model (seed {inst.seed}, alpha {inst.alpha}) ended at gradient norm "
                f"{grad_norm[col]:.3g} > {cfg.fit_max_grad_norm} after {cfg.fit_steps} GD "
                f"steps at lr {cfg.fit_lr}; raise fit_steps")
    final_loss = np.array([_cross_entropy(z, y[:, c], weight[:, c] > 0, theta[:, c]) for c in (0, 1)])
    return {"theta_ref": theta[:, 0].copy(), "theta_retr": theta[:, 1].copy(), "grad_norm": grad_norm,
            "final_loss": final_loss}


def _cross_entropy(z, y, rows, theta) -> float:
    logits = z[rows] @ theta
    return float(nll_loss(log_sigmoid((2.0 * y[rows] - 1.0) * logits)))


def fit_config(cfg: DataConfig, seed: int, alpha: float) -> dict:
    """The cache key of one instance's fits."""
    return {"data": cfg.as_dict(), "seed": int(seed), "alpha": float(alpha)}


def load_fit(cfg: DataConfig, seed: int, alpha: float, root=DEFAULT_RESULTS_DIR):
    """The cached fits of (seed, alpha) (``synthetic-fit-<hash>.npz``), or None if absent."""
    try:
        return cached("synthetic-fit", fit_config(cfg, seed, alpha), _refuse, root=root, code=FIT_CODE)
    except _Miss:
        return None


def fit_and_store(cfg: DataConfig, keys, root=DEFAULT_RESULTS_DIR) -> list[dict[str, np.ndarray]]:
    """Fit the instances ``keys`` = [(seed, alpha), ...] side by side and cache each one."""
    result = fit_reference_and_retrained(cfg, [draw_instance(cfg, s, a) for s, a in keys])
    return [cached("synthetic-fit", fit_config(cfg, s, a), lambda j=j: {k: v[j] for k, v in result.items()},
                   root=root, force=True, code=FIT_CODE) for j, (s, a) in enumerate(keys)]


#: What a cached fit depends on (infra/codehash.py): the instance and the fitting code. Loading and
#: storing name the same producers, so they agree on the key.
FIT_CODE = (draw_instance, fit_reference_and_retrained)


class _Miss(Exception):
    pass


def _refuse():
    raise _Miss
