"""Evaluation: scoring a model, TOFU metrics, membership inference, eval logs and summaries, the ``python -m llm eval`` CLI."""
