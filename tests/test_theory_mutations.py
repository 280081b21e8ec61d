"""Every check rejects a wrong candidate: a copy of the derivation with a flipped sign or a dropped factor 2.

The check functions take the candidate expression as an argument (their default is the package's
derivation, which ``python -m theory`` verifies), so the same proof code is run on the mutant here.
"""
import pytest
import sympy as sp

from theory.derivations import CHECKS
from theory.derivations import npo, orthogonal, relations, tabular, theorem2, typos
from theory.derivations._tools import R, beta, eta, eta0, g, m0, n_f, pi, pi_ref, sigmoid, t

r_ = sp.Symbol("r", positive=True)
b_ = sp.Symbol("b")
TWO = 2

MUTANTS = [
    # item 1
    (npo.check_npo_loss_forms, dict(logsigmoid_form=(TWO / beta) * sp.log(sigmoid(-beta * R))), "sign"),
    (npo.check_npo_loss_forms, dict(ratio_form=(1 / beta) * sp.log(1 + (pi / pi_ref) ** beta)), "factor 2"),
    (npo.check_npo_bounded_below, dict(loss=(TWO / beta) * sp.log(sigmoid(-beta * R))), "sign"),
    (npo.check_npo_without_one, dict(ratio_form=(1 / beta) * sp.log(1 + (pi / pi_ref) ** beta)), "factor 2"),
    # item 2
    (npo.check_gradient_weight, dict(weight=sigmoid(beta * R)), "factor 2"),
    (npo.check_gradient_weight, dict(weight=TWO * sigmoid(-beta * R)), "sign"),
    (npo.check_weight_range, dict(weight=sigmoid(beta * R)), "factor 2"),
    (npo.check_weight_series, dict(expansion=1 - beta * R / 2), "sign"),
    (npo.check_weight_series, dict(expansion=1 + beta * R), "factor 2"),
    # item 3
    (npo.check_prop1_limit, dict(limit=-R), "sign"),
    (npo.check_prop1_limit, dict(limit=TWO * R), "factor 2"),
    (npo.check_prop1_gradient_limit, dict(limit_weight=sp.Rational(1, 2)), "factor 2"),
    (npo.check_prop1_series, dict(expansion=R + beta * R ** 2 / 4 + beta ** 3 * R ** 4 / 96), "sign"),
    (npo.check_prop1_series, dict(expansion=R + beta * R ** 2 / 2 - beta ** 3 * R ** 4 / 96), "factor 2"),
    # item 4
    (relations.check_npo_is_dpo_without_winner, dict(npo=-(1 / beta) * sp.log(sigmoid(-beta * R))), "factor 2"),
    (relations.check_npo_is_dpo_without_winner, dict(npo=-(TWO / beta) * sp.log(sigmoid(beta * R))), "sign"),
    (relations.check_eq17_table2, dict(eq17_expr=relations.eq17() + TWO * relations.C[3] * relations.K_FG), "sign"),
    (relations.check_eq17_table2, dict(weights={**relations.ob.TABLE2_WEIGHTS, "ga_rt": (1.0, 0.0, 2.0, 0.0, 0.0)}),
     "factor 2"),
    (relations.check_kto, dict(kto=-(TWO / beta) * sp.log(sigmoid(relations.z_ref + beta * R))), "sign"),
    (relations.check_kto, dict(kto=-(1 / beta) * sp.log(sigmoid(relations.z_ref - beta * R))), "factor 2"),
    (relations.check_idk_and_dpo_limit, dict(idk=relations.lp_w), "sign"),
    # item 5
    (theorem2.check_per_sample_gradient, dict(gradient=lambda y, x, th: -theorem2.per_sample_gradient(y, x, th)), "sign"),
    (theorem2.check_alpha_recursion, dict(step=lambda a, d, w, e: a + e * d * w), "sign"),
    (theorem2.check_alpha_recursion, dict(weight=sigmoid(beta * R)), "factor 2"),
    (theorem2.check_logit_change_norm, dict(gram_fn=lambda X: TWO * (X @ X.T)), "factor 2"),
    (theorem2.check_logit_change_norm,
     dict(pred=lambda y, c=theorem2.c_sym, b=theorem2.b_sym: 1 / (1 + sp.exp((1 - 2 * y) * c - (1 - 2 * y) * b))), "sign"),
    # item 6
    (theorem2.check_comparison_ode, dict(solution=sp.log(beta * theorem2.C_ode * eta0 * t + 1) / beta), "sign"),
    (theorem2.check_comparison_ode, dict(solution=-sp.log(TWO * beta * theorem2.C_ode * eta0 * t + 1) / beta), "factor 2"),
    (theorem2.check_lemma3_step, dict(bounds=(0.5, 3.0)), "factor 2"),
    (theorem2.check_lemma3_step, dict(bounds=(-0.5, 1.5)), "sign"),
    (theorem2.check_lemma4_weight_bounds, dict(lower=r_), "factor 2"),
    (theorem2.check_lemma4_weight_bounds, dict(upper=r_ / 2), "factor 2"),
    (theorem2.check_lemma4_discrete_rates, dict(C_b=beta * theorem2.C8), "dropped factor"),
    (theorem2.check_lemma4_discrete_rates, dict(C_a=TWO * beta * theorem2.C7), "factor 2"),
    (theorem2.check_combined_rates, dict(ga_bound=lambda C: C * eta * t / n_f), "sqrt dropped"),
    (theorem2.check_combined_rates, dict(npo_bound=lambda C: TWO * sp.sqrt(n_f) / beta * sp.log(C * eta * t / n_f + 1)),
     "factor 2"),
    (orthogonal.check_orthogonal_ga, dict(offset=sp.exp(m0)), "sign"),
    (orthogonal.check_orthogonal_npo, dict(constant=orthogonal.npo_constant() / 2), "factor 2"),
    (orthogonal.check_orthogonal_npo,
     dict(constant=2 * beta * g * eta0 * (1 - orthogonal.margin_prob(0)) ** beta), "sign"),
    (orthogonal.check_orthogonal_slopes, dict(ga_slope=TWO * g * eta / sp.sqrt(n_f)), "factor 2"),
    (orthogonal.check_orthogonal_slopes, dict(npo_log_slope=-sp.sqrt(n_f) / beta), "sign"),
    # item 7
    (tabular.check_softmax_gradient, dict(gradient=lambda y, l: -tabular.softmax_gradient(y, l)), "sign"),
    (tabular.check_unlearned_sample, dict(ga_limit=TWO * tabular.x_col), "factor 2"),
    (tabular.check_tabular_margin_ode, dict(rate=-tabular.margin_ode()), "sign"),
    (tabular.check_tabular_margin_ode, dict(rate=-eta0 * tabular.W_ * (1 - tabular.P) * tabular.Q2), "dropped 1 +"),
    (tabular.check_tabular_rates, dict(bounds=lambda K: (1 + sp.Rational(1, K - 1), sp.Integer(1))), "factor 2"),
    # item 8: the printed and corrected forms swapped
    (typos.check_typo_eq45_sign, dict(printed=(1, typos.W_SYM), corrected=(-1, -typos.W_SYM)), "swap"),
    (typos.check_typo_weight_factor_2, dict(printed=2 * pi ** beta / (pi ** beta + pi_ref ** beta),
                                            corrected=pi ** beta / (pi ** beta + pi_ref ** beta)), "swap"),
    (typos.check_typo_gram_inverse, dict(printed=lambda X: X * X.T, corrected=lambda X: X.T * X), "swap"),
    (typos.check_typo_ode_exponent, dict(printed=-theorem2.C7 * eta0 * sp.exp(beta * typos.b_u),
                                         corrected=-theorem2.C7 * eta0 * sp.exp(beta * typos.b_l)), "swap"),
    (typos.check_typo_log_plus_one, dict(printed=lambda c: sp.log(c + 1) / beta, corrected=lambda c: sp.log(c) / beta),
     "swap"),
    (typos.check_typo_y0_exponent, dict(printed=theorem2.C8 * eta0 * sp.exp(-beta * b_),
                                        corrected=theorem2.C8 * eta0 * sp.exp(beta * b_)), "swap"),
]


def _rejects(fn, kwargs) -> bool:
    try:
        return fn(**kwargs) is False
    except Exception:  # a proof that cannot even be carried out on the mutant rejects it too
        return True


@pytest.mark.parametrize("fn, kwargs, kind", MUTANTS,
                         ids=[f"{fn.__name__}-{kind}-{i}" for i, (fn, _, kind) in enumerate(MUTANTS)])
def test_check_rejects_mutant(fn, kwargs, kind):
    assert _rejects(fn, kwargs), f"{fn.__name__} accepted a mutant ({kind})"


def test_every_registered_check_has_a_mutant():
    mutated = {fn for fn, _, _ in MUTANTS}
    missing = [c.id for c in CHECKS if c.run not in mutated]
    assert not missing, missing
