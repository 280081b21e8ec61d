"""The paper's objectives as small pure functions: the one numeric definition of each loss.

Every function takes per-sample (per-sequence) log-probabilities log pi(y|x) and returns a scalar
loss to be *minimised* by gradient descent. They work unchanged on numpy arrays (float64
simulations) and torch tensors (autograd, language models); the backend is picked from the input.
The symbolic derivations in this package (``theory.derivations``) are checked against these.

Conventions (paper-digest section 1, section 6):
* ``logp``      log pi_theta(y|x), summed over answer tokens for sequences;
* ``logp_ref``  log pi_ref(y|x), the same quantity under the frozen initial model;
* R = logp - logp_ref, the log-ratio that NPO, DPO and KTO act on.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = [
    "softplus", "log_sigmoid", "sigmoid", "ga_loss", "nll_loss", "npo_loss", "npo_weight",
    "dpo_loss", "kto_loss", "simnpo_loss", "kl_categorical", "TABLE2_WEIGHTS", "ga_family_loss",
]


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def softplus(x):
    """log(1 + e^x), exact and overflow-free in both backends (no torch threshold cut-off)."""
    if _is_torch(x):
        import torch
        return torch.logaddexp(torch.zeros_like(x), x)
    return np.logaddexp(0.0, x)


def log_sigmoid(x):
    """log sigma(x) = -softplus(-x)."""
    return -softplus(-x)


def sigmoid(x):
    if _is_torch(x):
        import torch
        return torch.sigmoid(x)
    return expit(x)


def _mean(x):
    return x.mean()


# ---- Eq. 1 and the likelihood terms ---------------------------------------------------------------

def ga_loss(logp):
    """Gradient ascent, Eq. 1: L_GA = E[log pi(y|x)]. Minimising it lowers the forget likelihood."""
    return _mean(logp)


def nll_loss(logp):
    """Negative log-likelihood -E[log pi(y|x)]: the retain loss L_RT and the IDK loss L_FG."""
    return -_mean(logp)


# ---- Eq. 3: NPO -----------------------------------------------------------------------------------

def npo_loss(logp, logp_ref, beta: float):
    """NPO, Eq. 3: (2/beta) E[log(1 + (pi/pi_ref)^beta)] = -(2/beta) E[log sigma(-beta R)].

    Written as softplus so that it neither overflows for large R nor loses precision for small.
    """
    _check_beta(beta)
    return (2.0 / beta) * _mean(softplus(beta * (logp - logp_ref)))


def npo_weight(logp, logp_ref, beta: float):
    """NPO's adaptive gradient weight W = 2 pi^beta / (pi^beta + pi_ref^beta) = 2 sigma(beta R).

    grad L_NPO = E[W * grad log pi]; W = 1 at theta = theta_ref, 0 < W < 2, W -> 1 as beta -> 0.
    """
    _check_beta(beta)
    return 2.0 * sigmoid(beta * (logp - logp_ref))


# ---- Eq. 2: DPO, and the other preference-style baselines -----------------------------------------

def dpo_loss(logp_win, logp_lose, ref_win, ref_lose, beta: float, prefactor: float = 2.0):
    """DPO, Eq. 2: -(prefactor/beta) E[log sigma(beta (R_win - R_lose))].

    The paper prints prefactor 1; the authors' synthetic and TOFU code (and open-unlearning) use 2,
    which makes NPO exactly DPO with the winning term removed. Default follows the code.
    """
    _check_beta(beta)
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return -(prefactor / beta) * _mean(log_sigmoid(beta * margin))


def kto_loss(logp, logp_ref, beta: float, z_ref):
    """KTO as the paper defines it (App. E.1.3): (2/beta) E[-log sigma(z_ref - beta R)].

    ``z_ref`` = beta * (estimated KL(pi || pi_ref)), a detached scalar supplied by the caller.
    """
    _check_beta(beta)
    return (2.0 / beta) * _mean(softplus(beta * (logp - logp_ref) - z_ref))


def simnpo_loss(logp, lengths, beta: float, delta: float = 0.0):
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO.

    -(2/beta) E[log sigma(beta (-logp/|y| - delta))] = (2/beta) E[softplus(beta (logp/|y| + delta))].
    """
    _check_beta(beta)
    return (2.0 / beta) * _mean(softplus(beta * (logp / lengths + delta)))


def kl_categorical(logp_p, logp_q):
    """Per-row KL(p || q) of categorical distributions given as log-probabilities (last axis)."""
    if _is_torch(logp_p):
        import torch
        return (torch.exp(logp_p) * (logp_p - logp_q)).sum(-1)
    return (np.exp(logp_p) * (logp_p - logp_q)).sum(-1)


# ---- Eq. 17 with Table 2: the GA family -----------------------------------------------------------

#: Table 2: (c_GA, c_FG, c_RT, c_FGKL, c_RTKL) of L = c_GA L_GA + c_FG L_FG + c_RT L_RT - c_FGKL K_FG + c_RTKL K_RT.
TABLE2_WEIGHTS = {
    "ga": (1.0, 0.0, 0.0, 0.0, 0.0),
    "ga_rt": (1.0, 0.0, 1.0, 0.0, 0.0),
    "ga_kl": (1.0, 0.0, 0.0, 0.0, 1.0),
    "idk_rt": (0.0, 1.0, 1.0, 0.0, 0.0),
}


def ga_family_loss(weights, l_ga, l_fg, l_rt, k_fg, k_rt):
    """Eq. 17: c_GA L_GA + c_FG L_FG + c_RT L_RT - c_FGKL K_FG + c_RTKL K_RT (terms already averaged)."""
    c_ga, c_fg, c_rt, c_fgkl, c_rtkl = weights
    return c_ga * l_ga + c_fg * l_fg + c_rt * l_rt - c_fgkl * k_fg + c_rtkl * k_rt


def _check_beta(beta) -> None:
    positive = beta > 0
    # beta may be an array broadcasting against logp (one beta per row, as in simulations/).
    if not (positive.all() if hasattr(positive, "all") else positive):
        raise ValueError(f"beta must be > 0 (got {beta}); use the GA method for the beta -> 0 limit")
