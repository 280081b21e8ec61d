"""The base layer: result files, caches keyed by inputs and code, the pipeline's stage runner, the CLI helper.

Every package (theory, simulations, llm, figures) may import it; it imports none of them
(tests/test_layers.py enforces the order infra < theory < simulations, llm < figures).
"""
