"""Unlearning methods of Section 4 on the random-feature model: objectives, gradients, GD, metrics.

Every objective is assembled from ``theory.objectives`` (``objective``), with the 2-class
log-probabilities log pi(y|x) = log_sigmoid(+-logit). Gradient descent uses the closed-form
derivative of each objective with respect to the logits (``LogitGradients``), which
tests/test_synthetic.py checks against torch autograd of ``objective``; a batch of parameter
vectors (one column per method and instance) then moves with two matrix products per step.

Each method is L = ga_family_loss(Table 2 weights, ...) + an optional preference term:

    GA, GA+RT, GA+KL, IDK+RT     Eq. 17 with Table 2's weights
    NPO, NPO+RT, NPO+KL          npo_loss       (+ L_RT or + K_RT)
    DPO, DPO+RT, DPO+KL          dpo_loss, y_w = y_idk, y_l = y, prefactor 2 as the authors' code
    KTO                          kto_loss, z_ref = beta * mean KL(pi_theta || pi_ref) (detached)

KL terms follow the authors' code, K = E KL(pi_ref || pi_theta) (paper-digest section 6.4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from theory.objectives import (TABLE2_WEIGHTS, dpo_loss, ga_family_loss, ga_loss, kl_categorical,
                               kto_loss, log_sigmoid, nll_loss, npo_loss)

_ZERO = (0.0, 0.0, 0.0, 0.0, 0.0)
_RT = (0.0, 0.0, 1.0, 0.0, 0.0)
_KL = (0.0, 0.0, 0.0, 0.0, 1.0)

#: method -> (Eq. 17 weights (c_GA, c_FG, c_RT, c_FGKL, c_RTKL), preference term or None)
METHODS: dict[str, tuple[tuple[float, ...], str | None]] = {
    "GA": (TABLE2_WEIGHTS["ga"], None),
    "GA+RT": (TABLE2_WEIGHTS["ga_rt"], None),
    "GA+KL": (TABLE2_WEIGHTS["ga_kl"], None),
    "IDK+RT": (TABLE2_WEIGHTS["idk_rt"], None),
    "NPO": (_ZERO, "npo"),
    "NPO+RT": (_RT, "npo"),
    "NPO+KL": (_KL, "npo"),
    "DPO": (_ZERO, "dpo"),
    "DPO+RT": (_RT, "dpo"),
    "DPO+KL": (_KL, "dpo"),
    "KTO": (_ZERO, "kto"),
}
FIGURE_METHODS = ("GA", "GA+RT", "IDK+RT", "NPO", "NPO+RT", "DPO+RT")

#: Table 1 (lr, beta) per alpha; rows marked in TABLE1_SOURCE. The KL variants follow the
#: authors' parameter_values.yml; KTO is in neither, so it borrows NPO's values.
TABLE1 = {
    1.0: {"GA": (5e-4, None), "GA+RT": (5e-4, None), "GA+KL": (5e-4, None), "IDK+RT": (5e-4, None),
          "NPO": (5e-3, 1.0), "NPO+RT": (5e-3, 1.0), "NPO+KL": (5e-3, 1.0),
          "DPO": (5e-3, 0.1), "DPO+RT": (5e-3, 0.1), "DPO+KL": (5e-3, 0.1), "KTO": (5e-3, 1.0)},
    0.0: {"GA": (1e-4, None), "GA+RT": (1e-4, None), "GA+KL": (1e-4, None), "IDK+RT": (1e-4, None),
          "NPO": (5e-2, 10.0), "NPO+RT": (5e-2, 10.0), "NPO+KL": (5e-2, 10.0),
          "DPO": (5e-2, 5.0), "DPO+RT": (5e-2, 5.0), "DPO+KL": (5e-2, 5.0), "KTO": (5e-2, 10.0)},
}
TABLE1_SOURCE = {m: "paper Table 1" for m in FIGURE_METHODS}
TABLE1_SOURCE.update({m: "authors' parameter_values.yml" for m in ("GA+KL", "NPO+KL", "DPO", "DPO+KL")})
TABLE1_SOURCE["KTO"] = "not in the paper: NPO's values"
TABLE1_SOURCE["DPO+RT"] = "paper Table 1 (the yml has lr 2e-2 at alpha=0)"


@dataclass(frozen=True)
class MethodSpec:
    """One unlearning run: a METHODS key, its learning rate and beta (None for the GA family)."""
    method: str
    lr: float
    beta: float | None = None
    label: str = ""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        needs_beta = METHODS[self.method][1] is not None
        if needs_beta and not (self.beta is not None and self.beta > 0):
            raise ValueError(f"{self.method} needs beta > 0 (got {self.beta})")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0 (got {self.lr})")
        object.__setattr__(self, "label", self.label or self.method)

    @property
    def uses_retain(self) -> bool:
        weights = METHODS[self.method][0]
        return weights[2] != 0 or weights[4] != 0


def table1_specs(methods, alpha: float) -> list[MethodSpec]:
    """Table 1's defaults for the given methods at alpha in {0, 1}."""
    if float(alpha) not in TABLE1:
        raise ValueError(f"Table 1 has alpha 1 and 0 only (got {alpha}); pass explicit MethodSpecs")
    return [MethodSpec(m, *TABLE1[float(alpha)][m]) for m in methods]


# ---- the objective, from theory.objectives ---------------------------------------------------------

def _rows(logits):
    """2-class log-probability rows [log pi(0|x), log pi(1|x)] (numpy or torch)."""
    parts = [log_sigmoid(-logits), log_sigmoid(logits)]
    if type(logits).__module__.split(".")[0] == "torch":
        import torch
        return torch.stack(parts, -1)
    return np.stack(parts, -1)


def _sign(y):
    return 2.0 * y - 1.0


def objective(spec: MethodSpec, s_forget, s_retain, ref_forget, ref_retain, y_forget, y_retain, y_idk):
    """The loss of ``spec`` at forget/retain logits (numpy, or torch for autograd).

    ``ref_*`` are the reference model's logits; labels are 0/1 arrays.
    """
    weights, preference = METHODS[spec.method]
    lp = log_sigmoid(_sign(y_forget) * s_forget)          # log pi(y|x) on the forget set
    lp_idk = log_sigmoid(_sign(y_idk) * s_forget)         # log pi(y_idk|x)
    lp_retain = log_sigmoid(_sign(y_retain) * s_retain)
    k_fg = kl_categorical(_rows(ref_forget), _rows(s_forget)).mean()
    k_rt = kl_categorical(_rows(ref_retain), _rows(s_retain)).mean()
    loss = ga_family_loss(weights, ga_loss(lp), nll_loss(lp_idk), nll_loss(lp_retain), k_fg, k_rt)
    lp_ref = log_sigmoid(_sign(y_forget) * ref_forget)
    if preference == "npo":
        loss = loss + npo_loss(lp, lp_ref, spec.beta)
    elif preference == "dpo":
        loss = loss + dpo_loss(lp_idk, lp, log_sigmoid(_sign(y_idk) * ref_forget), lp_ref, spec.beta)
    elif preference == "kto":
        kl = kl_categorical(_rows(s_forget), _rows(ref_forget)).mean()
        z_ref = spec.beta * (kl.detach() if hasattr(kl, "detach") else kl)
        loss = loss + kto_loss(lp, lp_ref, spec.beta, z_ref)
    return loss


# ---- closed-form logit gradients, batched over method columns ---------------------------------------

class LogitGradients:
    """d(loss)/d(logits) for M method columns at once, each scaled by ``scale`` (lr or 1).

    With P = sigma(s), u = (2y - 1) s and D = y - P = d log pi(y|x)/ds on the forget rows:
      GA family:  c_GA D - c_FG (P - y_idk) + c_FGKL (P - p_ref)  [forget],
                  c_RT (P - y) + c_RTKL (P - p_ref)                [retain]  (KL(ref||theta)' = P - p_ref)
      NPO:        W D, W = npo_weight = 2 sigma(beta R), R = log pi - log pi_ref = sp(-u_ref) - sp(-u)
      DPO:        2 sigma(-beta m) (y - y_idk); where y_idk != y, log pi(y_idk|x) = log pi(y|x) - u,
                  so the margin is m = -(u - u_ref) (and the term is constant where y_idk = y)
      KTO:        2 sigma(beta R - z_ref) D, z_ref = beta mean KL(pi_theta || pi_ref) held fixed
    all divided by the set size (sp = softplus). Columns [0, n_retain_cols) are the methods that use
    the retain set. Arrays carry a leading instance axis: forget rows (k, n_f, M), retain (k, n_r, M_R).
    """

    def __init__(self, specs: list[MethodSpec], ref_forget, ref_retain, y_forget, y_retain, y_idk,
                 scale=None):
        m = len(specs)
        if [s.uses_retain for s in specs] != sorted((s.uses_retain for s in specs), reverse=True):
            raise ValueError("order the specs with the retain-using methods first")
        self.n_retain_cols = mr = sum(s.uses_retain for s in specs)
        scale = np.ones(m) if scale is None else np.asarray(scale, np.float64)
        n_f, n_r = y_forget.shape[-1], y_retain.shape[-1]
        w = np.array([METHODS[s.method][0] for s in specs])  # (M, 5)
        sf = scale / n_f
        sr = scale[:mr] / n_r
        yf, yr, yi = y_forget[..., None], y_retain[..., None], y_idk[..., None]
        p_ref_f, p_ref_r = expit(ref_forget)[..., None], expit(ref_retain)[..., None]
        # forget: g = D * a + b with D = y - P  (P - y_idk = (y - y_idk) - D, P - p_ref = (y - p_ref) - D)
        self.a_forget = sf * (w[:, 0] - w[:, 1] + w[:, 3])
        self.b_forget = sf * (w[:, 1] * (yf - yi) - w[:, 3] * (yf - p_ref_f))
        # retain: g = P * a - b
        self.a_retain = sr * (w[:mr, 2] + w[:mr, 4])
        self.b_retain = sr * (w[:mr, 2] * yr + w[:mr, 4] * p_ref_r)
        self.y_forget = yf
        self.sign = _sign(yf)
        u_ref = self.sign * ref_forget[..., None]
        self.terms = []
        for kind in ("npo", "dpo", "kto"):
            cols = np.array([j for j, s in enumerate(specs) if METHODS[s.method][1] == kind], int)
            if cols.size == 0:
                continue
            beta = np.array([specs[j].beta for j in cols], np.float64)
            term = dict(kind=kind, cols=_as_slice(cols), beta=beta, scale=sf[cols], u_ref=u_ref,
                        sp_ref=softplus_fast(-u_ref))
            if kind == "dpo":
                term.update(direction=2.0 * sf[cols] * (yf - yi))
            if kind == "kto":
                term.update(ref=ref_forget[..., None])
            self.terms.append(term)

    def __call__(self, s_forget, s_retain):
        """(g_forget, g_retain) = d loss / d logits for logits (k, n_f, M) and (k, n_r, M_R)."""
        d = sigmoid_fast(s_forget)
        np.subtract(self.y_forget, d, out=d)
        g_forget = d * self.a_forget
        g_forget += self.b_forget
        for t in self.terms:
            cols = t["cols"]
            u = self.sign * s_forget[..., cols]
            if t["kind"] == "dpo":
                g_forget[..., cols] += sigmoid_fast(t["beta"] * (u - t["u_ref"])) * t["direction"]
                continue
            ratio = t["sp_ref"] - softplus_fast(-u)  # R = log pi - log pi_ref
            if t["kind"] == "npo":
                weight = 2.0 * sigmoid_fast(t["beta"] * ratio)
            else:  # kto
                z = t["beta"] * binary_kl(s_forget[..., cols], t["ref"]).mean(axis=-2, keepdims=True)
                weight = 2.0 * sigmoid_fast(t["beta"] * ratio - z)
            g_forget[..., cols] += weight * t["scale"] * d[..., cols]
        g_retain = sigmoid_fast(s_retain)
        g_retain *= self.a_retain
        g_retain -= self.b_retain
        return g_forget, g_retain


def _as_slice(cols: np.ndarray):
    """Contiguous column indices as a slice (a view, not a copy, when indexing)."""
    if cols.size and np.all(np.diff(cols) == 1):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


# The hot loops need sigma and softplus on numpy arrays only; these SIMD forms are several times
# faster than scipy's expit and np.logaddexp (scalar loops) and agree with theory.objectives'
# sigmoid and softplus to rounding (tests/test_synthetic.py).

def sigmoid_fast(x):
    """sigma(x) = (1 + tanh(x/2)) / 2, a new array."""
    out = np.multiply(x, 0.5)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def softplus_fast(x, out=None):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): overflow-free, a new array (or ``out``)."""
    tail = np.abs(x)
    np.negative(tail, out=tail)
    np.exp(tail, out=tail)
    np.log1p(tail, out=tail)
    out = np.maximum(x, 0.0, out=out)
    out += tail
    return out


def binary_kl(logit_p, logit_q):
    """KL(Bern(sigma(a)) || Bern(sigma(b))) = sigma(a) (a - b) + softplus(b) - softplus(a).

    The 2-class case of ``theory.objectives.kl_categorical`` (tests check they agree) written
    from logits, so a metric over millions of (sample, snapshot) pairs costs one softplus each.
    """
    return sigmoid_fast(logit_p) * (logit_p - logit_q) + softplus_fast(logit_q) - softplus_fast(logit_p)


# ---- gradient descent and metrics -------------------------------------------------------------------

def unlearn(z_forget, z_retain, theta_ref, grads: LogitGradients, steps: int, eval_every: int):
    """Full-batch GD from theta_ref for every (instance, method) column; returns the snapshots.

    ``z_*`` are lists of the k instances' feature matrices, theta_ref is (k, N), ``grads`` must be
    built with scale = lr. Snapshots (k, steps // eval_every, N, M) are taken before the update at
    steps 0, eval_every, ..., as the authors evaluate.
    """
    k, n_feat = theta_ref.shape
    m, mr = grads.a_forget.shape[-1], grads.n_retain_cols
    theta = np.repeat(theta_ref[:, :, None], m, axis=2)  # (k, N, M)
    n_snap = -(-steps // eval_every)
    snaps = np.empty((k, n_snap, n_feat, m))
    s_f = np.empty((k, z_forget[0].shape[0], m))
    s_r = np.empty((k, z_retain[0].shape[0], mr))
    step_f = np.empty((k, n_feat, m))
    step_r = np.empty((k, n_feat, mr))
    for t in range(steps):
        if t % eval_every == 0:
            snaps[:, t // eval_every] = theta
        for j in range(k):
            np.matmul(z_forget[j], theta[j], out=s_f[j])
            if mr:
                np.matmul(z_retain[j], theta[j, :, :mr], out=s_r[j])
        g_f, g_r = grads(s_f, s_r)
        for j in range(k):
            np.matmul(z_forget[j].T, g_f[j], out=step_f[j])
            if mr:
                np.matmul(z_retain[j].T, g_r[j], out=step_r[j])
        theta -= step_f
        if mr:
            theta[:, :, :mr] -= step_r
    return snaps


def distances(z_eval, theta_snaps, logit_target, chunk: int = 128):
    """mean_x KL(pi_target || pi_theta) on one eval set for every snapshot column.

    z_eval (n, N), theta_snaps (N, C), logit_target (n,) -> (C,). Uses
    KL = p (a - b) + softplus(b) - softplus(a): the terms in a alone are a constant, the term in
    p b is linear in theta, so only softplus(b) is evaluated per (sample, column).
    """
    n = z_eval.shape[0]
    p = expit(logit_target)
    constant = np.mean(p * logit_target - softplus_fast(logit_target))
    linear = (p @ z_eval / n) @ theta_snaps
    out = np.empty(theta_snaps.shape[1])
    for lo in range(0, theta_snaps.shape[1], chunk):
        b = z_eval @ theta_snaps[:, lo:lo + chunk]
        out[lo:lo + chunk] = softplus_fast(b, out=b).mean(axis=0)
    return np.maximum(constant - linear + out, 0.0)  # KL >= 0; the three terms cancel to rounding at 0
