"""Training: configuration, the loop, what unlearning adds, objectives, checkpoints, distribution, the reference cache."""
