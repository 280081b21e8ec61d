"""The GA family (paper Eq. 17 with Table 2's coefficients): GA, GA+RT, GA+KL and IDK+RT.

The GA forget term, the IDK term and the RT term are HF-style token-mean NLLs over the micro-batch
(``model(**batch).loss`` in the authors' code); the KL term is llm.train.methods.base.retain_kl. All are
weighted and summed by theory.objectives.ga_family_loss, as the paper writes them.
"""
from __future__ import annotations

from llm.train.methods.base import Inputs, Method, REGULARISERS, register, retain_kl, retain_nll
from theory.objectives import TABLE2_WEIGHTS, ga_family_loss, ga_loss, nll_loss


def ga_family(name: str, x: Inputs, forget_weight, retain_weight) -> dict:
    """Eq. 17 for ``name``'s Table 2 row; forget_weight scales the GA / IDK term, retain_weight RT / KL."""
    from llm.models import token_mean_logp  # here: the registry imports without torch (base.py)
    c_ga, c_fg, c_rt, c_fgkl, c_rtkl = TABLE2_WEIGHTS[name]
    zero = x.forget_logp.new_zeros(())
    l_ga = ga_loss(token_mean_logp(x.forget_logp, x.forget_tokens)) if c_ga else zero
    l_fg = nll_loss(token_mean_logp(x.idk_logp, x.idk_tokens)) if c_fg else zero
    l_rt = retain_nll(x) if c_rt else zero
    k_rt = retain_kl(x) if c_rtkl else zero
    weights = (forget_weight * c_ga, forget_weight * c_fg, retain_weight * c_rt, c_fgkl,
               retain_weight * c_rtkl)
    loss = ga_family_loss(weights, l_ga, l_fg, l_rt, zero, k_rt)
    forget = l_ga if c_ga else l_fg
    retain = l_rt if c_rt else k_rt
    return {"loss": loss, "forget_loss": forget.detach(), "retain_loss": retain.detach()}


def _variant(name, label, forget, regulariser, needs, colour, linestyle, doc) -> Method:
    hparams = {"forget_weight": 1.0} | ({"retain_weight": 1.0} if regulariser != "none" else {})

    def loss(x: Inputs, forget_weight, retain_weight=1.0):
        return ga_family(name, x, forget_weight, retain_weight)

    loss.__name__ = loss.__qualname__ = name
    return register(Method(name=name, label=label, forget=forget, regulariser=regulariser,
                           hparams=hparams, needs=frozenset(needs) | REGULARISERS[regulariser][1],
                           loss=loss, colour=colour, linestyle=linestyle, doc=doc))


_variant("ga", "GA", "ga", "none", (), "#D55E00", "-", "gradient ascent on the forget answers")
_variant("ga_rt", "GA+RT", "ga", "rt", (), "#E69F00", "--", "GA + retain NLL")
_variant("ga_kl", "GA+KL", "ga", "kl", (), "#CC79A7", ":", "GA + KL to the reference on retain")
_variant("idk_rt", "IDK+RT", "idk", "rt", ("idk",), "#999999", "-.",
         "NLL of an 'I don't know' answer + retain NLL")
