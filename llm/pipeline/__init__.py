"""The TOFU pipeline: the run grid, its stages, the data subset, what each evaluation records, the result schema, the CLI."""
