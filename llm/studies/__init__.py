"""Studies on top of the pipeline: collapse rate, lr sweep, results reader and claims, attacks."""
