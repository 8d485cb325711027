"""Training: the Accelerate loop, exact-resume checkpoints, the refit, and one run start to finish."""
