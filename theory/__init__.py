"""The paper's theory: one numeric definition of every loss and its machine-checked derivations.

* ``theory.objectives``   every loss (GA, NPO, DPO, KTO, IDK/NLL, Eq. 17), numpy or torch;
* ``theory.predictions``  Theorem 2's trajectories and rates with every constant explicit;
* ``theory.fits``         the fits that measure those rates on recorded trajectories (simulations and
  LMs alike): a line fit, the two laws, one crossing rule;
* ``theory.derivations``  sympy derivations of items 1-8 of the theory, each proved and spot-checked;
  ``python -m theory`` runs them (``--json``, ``--markdown PATH``).
"""
