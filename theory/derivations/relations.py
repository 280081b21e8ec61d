"""Item 4: how NPO relates to DPO, the GA family of Eq. 17 (Table 2), KTO and IDK.

Per sample, R_w = log(pi(y_w)/pi_ref(y_w)) and R_l = log(pi(y_l)/pi_ref(y_l)):
    DPO (Eq. 2) = -(c/beta) log sigma(beta (R_w - R_l)), c = 1 in the paper, c = 2 in the code;
    NPO = DPO with the winning term removed (R_w = 0) and c = 2, i.e. twice the paper's DPO;
    KTO (App. E.1.3) = (2/beta) (-log sigma(z_ref - beta R)), so KTO = NPO when z_ref = 0;
    IDK: L_FG = -E log pi(y_idk | x), and as beta -> 0 the (c = 2) DPO tends to GA + IDK.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .. import objectives as ob
from ._tools import R, agree, beta, close, equal, latex_eq, rng, sigmoid, tex
from .npo import npo_loss_logsigmoid
from .registry import check

R_w, R_l = sp.symbols("R_w R_l", real=True)
z_ref = sp.Symbol("z_ref", real=True)
c_pref = sp.Symbol("c", positive=True)
L_GA, L_FG, L_RT, K_FG, K_RT = sp.symbols(r"L_GA L_FG L_RT K_FG K_RT", real=True)
C = sp.symbols("c_GA c_FG c_RT c_FGKL c_RTKL", real=True)
lp_l, lp_w, ref_l, ref_w = sp.symbols("logp_l logp_w logpref_l logpref_w", real=True)


# ---- derivations ---------------------------------------------------------------------------------

def dpo_per_sample(prefactor=c_pref):
    """Eq. 2 per sample, with the prefactor left free (paper: 1, authors' code: 2)."""
    return -(prefactor / beta) * sp.log(sigmoid(beta * (R_w - R_l)))


def npo_from_dpo():
    """Remove the winning term (R_w = 0) from the c = 2 DPO and rename R_l -> R."""
    return dpo_per_sample(2).subs(R_w, 0).subs(R_l, R)


def eq17():
    """Eq. 17: c_GA L_GA + c_FG L_FG + c_RT L_RT - c_FGKL K_FG + c_RTKL K_RT."""
    c_ga, c_fg, c_rt, c_fgkl, c_rtkl = C
    return c_ga * L_GA + c_fg * L_FG + c_rt * L_RT - c_fgkl * K_FG + c_rtkl * K_RT


#: The methods of Table 2 as the paper's text defines them (Sec. 2 and App. E).
TABLE2_METHODS = {"ga": L_GA, "ga_rt": L_GA + L_RT, "ga_kl": L_GA + K_RT, "idk_rt": L_FG + L_RT}


def kto_per_sample():
    """App. E.1.3: (2/beta) (-log sigma(z_ref - beta R))."""
    return -(2 / beta) * sp.log(sigmoid(z_ref - beta * R))


def idk_loss():
    """L_FG per sample: -log pi(y_idk | x)."""
    return -lp_w


def dpo_small_beta_limit():
    """lim_{beta -> 0} [DPO_(c=2) - (2/beta) log 2] = R_l - R_w."""
    shifted = dpo_per_sample(2) - (2 / beta) * sp.log(2)
    return sp.limit(shifted, beta, 0, "+")


# ---- checks ----------------------------------------------------------------------------------------

@check("4.npo-is-dpo-without-winner", 4, "Eqs. 2-3",
       "NPO = DPO with the winning term removed and prefactor 2/beta; with the paper's 1/beta, NPO = 2 DPO",
       "simplify(DPO(R_w=0) - NPO) = 0 for c = 2 and 2 DPO - NPO = 0 for c = 1; objectives.dpo_loss vs npo_loss",
       show=lambda: [("DPO, Eq. 2", latex_eq(sp.Symbol(r"\mathcal{L}_{\mathrm{DPO}}"), dpo_per_sample())),
                     ("winning term removed, c = 2", latex_eq(sp.Symbol(r"\mathcal{L}_{\mathrm{NPO},\beta}"), npo_from_dpo()))])
def check_npo_is_dpo_without_winner(npo=None) -> bool:
    npo = npo_loss_logsigmoid() if npo is None else npo
    dropped = dpo_per_sample().subs(R_w, 0).subs(R_l, R)
    symbolic = equal(dropped.subs(c_pref, 2), npo) and equal(2 * dropped.subs(c_pref, 1), npo)
    r = rng(10)
    lp, ref = r.uniform(-15, 0, (2, 12))
    # y_w with pi_theta(y_w) = pi_ref(y_w): its log-ratio is 0, i.e. the winning term is removed.
    w = r.uniform(-15, 0, 12)
    ok = symbolic
    for b in (0.1, 1.0, 3.0):
        ours = np.mean(sp.lambdify((R, beta), npo, "numpy")(lp - ref, b))
        ok = ok and close(ob.dpo_loss(w, lp, w, ref, b, prefactor=2.0), ours) and \
            close(2 * ob.dpo_loss(w, lp, w, ref, b, prefactor=1.0), ours) and close(ob.npo_loss(lp, ref, b), ours)
    return ok


@check("4.eq17-table2", 4, "Eq. 17, Table 2",
       "Eq. 17 with the Table 2 weights gives GA = L_GA, GA+RT = L_GA + L_RT, GA+KL = L_GA + K_RT, IDK+RT = L_FG + L_RT",
       "substitute theory.objectives.TABLE2_WEIGHTS into Eq. 17, simplify(lhs - rhs) = 0; "
       "objectives.ga_family_loss vs Eq. 17 with random weights and terms",
       show=lambda: [("Eq. 17", latex_eq(sp.Symbol(r"\mathcal{L}"), eq17()))]
       + [(f"Table 2, {name}", latex_eq(sp.Symbol(r"\mathcal{L}_{\mathrm{" + name.replace("_", "+").upper() + "}}"), expr))
          for name, expr in TABLE2_METHODS.items()])
def check_eq17_table2(eq17_expr=None, weights=None) -> bool:
    e = eq17() if eq17_expr is None else eq17_expr
    weights = ob.TABLE2_WEIGHTS if weights is None else weights
    symbolic = set(weights) == set(TABLE2_METHODS) and all(
        equal(e.subs(dict(zip(C, map(sp.nsimplify, weights[name])))), TABLE2_METHODS[name])
        for name in TABLE2_METHODS)
    r = rng(11)
    pts = r.normal(size=(32, 10))
    numeric = agree(e, (*C, L_GA, L_FG, L_RT, K_FG, K_RT),
                    lambda *cols: ob.ga_family_loss(cols[:5], *cols[5:]), pts)
    # With the real loss functions: GA+RT really is ga_loss on the forget set plus nll on the retain set.
    lf, li, lr = r.uniform(-8, 0, (3, 16))
    kf, kr = r.uniform(0, 2, 2)
    terms = (ob.ga_loss(lf), ob.nll_loss(li), ob.nll_loss(lr), kf, kr)
    composed = ob.ga_family_loss(weights["ga_rt"], *terms) == ob.ga_loss(lf) + ob.nll_loss(lr)
    return symbolic and numeric and bool(composed)


@check("4.kto", 4, "App. E.1.3",
       "KTO = (2/beta) E[-log sigma(z_ref - beta R)] = (2/beta) E log(1 + e^{beta R - z_ref}); "
       "it is NPO at z_ref = 0 and its weight is 2 sigma(beta R - z_ref)",
       "simplify(lhs - rhs) = 0 for the three identities; objectives.kto_loss and npo_loss at random points",
       show=lambda: [("KTO", latex_eq(sp.Symbol(r"\mathcal{L}_{\mathrm{KTO}}"), kto_per_sample())),
                     ("weight", latex_eq(sp.Derivative(sp.Symbol(r"\mathcal{L}_{\mathrm{KTO}}"), R),
                                         sp.simplify(sp.diff(kto_per_sample(), R))))])
def check_kto(kto=None) -> bool:
    k = kto_per_sample() if kto is None else kto
    symbolic = equal(k, (2 / beta) * sp.log(1 + sp.exp(beta * R - z_ref))) and \
        equal(k.subs(z_ref, 0), npo_loss_logsigmoid()) and \
        equal(sp.diff(k, R), 2 * sigmoid(beta * R - z_ref))
    r = rng(12)
    lp, ref = r.uniform(-15, 0, (2, 10))
    f = sp.lambdify((R, beta, z_ref), k, "numpy")
    ok = symbolic
    for b, z in ((0.1, 0.3), (1.0, -2.0), (2.5, 0.0)):
        ok = ok and close(ob.kto_loss(lp, ref, b, z), np.mean(f(lp - ref, b, z)))
    return ok and close(ob.kto_loss(lp, ref, 0.7, 0.0), ob.npo_loss(lp, ref, 0.7))


@check("4.idk-and-dpo-limit", 4, "Eqs. 2, 17",
       "IDK: L_FG = -E log pi(y_idk|x); as beta -> 0, DPO (c = 2) - (2/beta) log 2 -> L_GA + L_FG - E[log pi_ref(y_l) - log pi_ref(y_w)]",
       "sympy limit; objectives.dpo_loss at beta = 1e-8 against ga_loss + nll_loss (the IDK loss) plus the constant",
       show=lambda: [("IDK", tex(r"\mathcal{L}_{\mathrm{FG}}", r"-\log \pi_\theta(y_{idk}|x)")),
                     ("small-beta DPO", latex_eq(sp.Limit(sp.Symbol(r"\mathcal{L}_{\mathrm{DPO}}") - 2 * sp.log(2) / beta, beta, 0, "+"),
                                                 dpo_small_beta_limit()))])
def check_idk_and_dpo_limit(idk=None) -> bool:
    idk = idk_loss() if idk is None else idk
    ga = lp_l
    limit = dpo_small_beta_limit().subs({R_w: lp_w - ref_w, R_l: lp_l - ref_l})
    symbolic = equal(limit, ga + idk - (ref_l - ref_w))
    r = rng(13)
    lw, ll, rw, rl = r.uniform(-10, 0, (4, 12))
    b = 1e-8
    shifted = ob.dpo_loss(lw, ll, rw, rl, b, prefactor=2.0) - (2 / b) * np.log(2)
    f = sp.lambdify((lp_w,), idk * sp.Integer(1), "numpy")
    idk_numeric = np.mean(f(lw) * np.ones_like(lw))
    return symbolic and close(idk_numeric, ob.nll_loss(lw)) and \
        close(shifted, ob.ga_loss(ll) + idk_numeric - np.mean(rl - rw), atol=1e-5)
