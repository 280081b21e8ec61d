"""TOFU data: loading the splits, prompt formatting, the seeded order items are seen in."""
