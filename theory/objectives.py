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
    "npo_weight_from_loss", "npo_log_ratio_from_loss",
    "dpo_loss", "kto_loss", "simnpo_loss", "kl_categorical", "TABLE2_WEIGHTS", "ga_family_loss",
    "wga_loss", "satimp_loss", "ceu_loss", "undial_loss", "rmu_forget_loss", "rmu_retain_loss",
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


def npo_weight_from_loss(loss, beta: float):
    """W read back from one item's NPO loss L = (2/beta) softplus(beta R): W = 2 (1 - e^{-beta L / 2}).

    (e^{beta L/2} = 1 + e^{beta R}, and 2 sigma(beta R) = 2 e^{beta R} / (1 + e^{beta R}).) Applied to a
    batch's *mean* loss it bounds the batch-mean weight from above (the map is concave in L), so a
    training log's per-step NPO loss says how far the weight has at least fallen.
    """
    _check_beta(beta)
    return -2.0 * np.expm1(-beta * np.asarray(loss, dtype=float) / 2.0)


def npo_log_ratio_from_loss(loss, beta: float):
    """R read back from one item's NPO loss: R = log(e^{beta L / 2} - 1) / beta (-inf at L = 0)."""
    _check_beta(beta)
    with np.errstate(divide="ignore"):
        return np.log(np.expm1(beta * np.asarray(loss, dtype=float) / 2.0)) / beta


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


# ---- open-unlearning's token-level objectives (torch only) ----------------------------------------
# These act on per-token quantities, not on per-sequence sums: ``token_logp`` [B, T] (0 off the
# answer), ``mask`` [B, T] bool (answer tokens), ``logits`` [N, V] at the N answer positions with
# their ``labels`` [N], hidden states [B, T, H]. Each averages over the micro-batch's answer tokens
# as one flat set (HF's ``CrossEntropyLoss`` mean), as open-unlearning does. sg(.) = detach.

def wga_loss(token_logp, mask, beta: float):
    """WGA (Wang et al. 2025), open-unlearning ``src/trainer/utils.py`` ``compute_wga_loss``:

    -mean_t [sg(p_t)^beta * CE_t] = mean_t [sg(p_t)^beta * log p_t] over answer tokens t,
    p_t = pi_theta(y_t | x, y_<t). Minimising it lowers log p_t, each token weighted by its own
    (detached) probability, so tokens already forgotten stop pulling."""
    weight = token_logp.detach().exp() ** beta
    return (weight * token_logp)[mask].mean()


def satimp_loss(token_logp, mask, beta1: float, beta2: float):
    """SatImp (Yang et al. 2025), open-unlearning ``src/trainer/utils.py`` ``compute_satimp_loss``:

    -mean_t [sg(p_t)^beta1 * sg(1 - p_t)^beta2 * CE_t] over answer tokens t (the "saturation" weight
    p^beta1 times the "importance" weight (1-p)^beta2; beta2 = 0 is WGA)."""
    p = token_logp.detach().exp()
    return ((p ** beta1) * (1 - p) ** beta2 * token_logp)[mask].mean()


def ceu_loss(logits, labels):
    """CE-U (Yang et al. 2025, arXiv:2503.01224), open-unlearning ``src/trainer/unlearn/ceu.py``
    ``cross_entropy_unlearning_loss``:

    mean_n CE(z_n, softmax(sg(z_n) with z_n[y_n] = -inf)) over the N rows of ``logits`` [N, V]: the
    target is the model's own distribution with the true token's mass removed. (Which answer
    positions enter, open-unlearning skipping each answer's first token, is the caller's choice.)"""
    import torch
    z = logits.float()
    target = z.detach().scatter(-1, labels.unsqueeze(-1), float("-inf")).softmax(-1)
    if z.shape[0] == 0:  # no position left: a zero that keeps the graph
        return z.sum() * 0
    return torch.nn.functional.cross_entropy(z, target)


def undial_loss(logits, ref_logits, labels, beta: float):
    """UNDIAL (Dong et al. 2024), open-unlearning ``src/trainer/utils.py`` ``compute_undial_loss``:

    mean_n CE(z_n, softmax(sg(z_ref_n) - beta * onehot(y_n))) over the N answer positions: distil
    from the reference with the true token's logit lowered by beta. open-unlearning averages over
    every position of the sequence (prompt and padding too) and scatters the -100 labels there into
    vocabulary entry V-100; here only answer positions enter, by construction of ``logits``."""
    import torch
    z = logits.float()
    shifted = ref_logits.detach().float().scatter_add(
        -1, labels.unsqueeze(-1), torch.full_like(z[:, :1], -float(beta)))
    if z.shape[0] == 0:
        return z.sum() * 0
    return torch.nn.functional.cross_entropy(z, shifted.softmax(-1))



def _masked_mse(a, b, attn):
    """open-unlearning's RMU ``compute_activation_loss``: per row, the squared error averaged over
    the hidden dimension and summed over the positions ``attn`` [B, T] marks, divided by their
    number in that row; then the mean over rows."""
    per_row = (((a - b) ** 2).mean(-1) * attn).sum(-1) / attn.sum(-1)
    return per_row.mean()


def rmu_forget_loss(hidden, attn, control):
    """RMU (Li et al. 2024, the WMDP paper), open-unlearning ``src/trainer/unlearn/rmu.py``, forget term:

    mean_rows [ sum_{t in attn} mean_h (h_l(x_f)_t,h - c u_h)^2 / |attn| ]: push the hidden state
    after decoder layer l towards the fixed random direction ``control`` = c u ([H], |u| = 1).
    ``attn`` marks the positions averaged over (open-unlearning: the answer tokens, labels != -100)."""
    return _masked_mse(hidden.float(), control.to(hidden.device).float(), attn)


def rmu_retain_loss(hidden, ref_hidden, attn):
    """RMU's retain term (open-unlearning's ``retain_loss_type: EMBED_DIFF``): the same masked
    squared error between the model's and sg(the reference's) hidden states after layer l."""
    return _masked_mse(hidden.float(), ref_hidden.detach().float(), attn)
