"""theory/predictions.py against direct simulation of the decoupled GD recursion."""
import numpy as np
import pytest

from theory import predictions as pr
from theory.objectives import npo_weight, softplus


def _discrete(m0, eta0, beta, steps):
    b = np.zeros_like(m0)
    logp0 = -softplus(-m0)
    for _ in range(steps):
        m = m0 - b
        w = 1.0 if beta is None else npo_weight(-softplus(-m), logp0, beta)
        b = b + eta0 * np.exp(-softplus(m)) * w
    return b


@pytest.mark.parametrize("beta", [None, 0.5, 2.0])
def test_flow_matches_discrete_gd(beta):
    rng = np.random.default_rng(1)
    m0, n_f, eta, steps = rng.normal(size=5), 5, 0.1, 20000
    b = _discrete(m0, eta / n_f, beta, steps)
    flow = pr.flow_logit_change([steps], eta, n_f, m0, beta)[0]
    np.testing.assert_allclose(b, flow, rtol=1e-3)


def test_leading_order_is_the_large_t_limit():
    m0 = np.array([-1.0, 0.0, 2.0])
    t = np.array([1e8])
    flow = pr.flow_logit_change(t, 1.0, 3, m0, beta=1.0)[0]
    lead = pr.npo_logit_change(t, 1.0, 3, 1.0, m0)[0]
    np.testing.assert_allclose(flow, lead, rtol=1e-3)
    ga = pr.flow_logit_change(t, 1.0, 3, m0)[0]
    np.testing.assert_allclose(ga, pr.ga_logit_change(t, 1.0, 3, m0)[0], rtol=1e-9)
