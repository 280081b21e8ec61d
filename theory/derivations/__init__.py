"""Machine-checked derivations (package docstring placeholder)."""
