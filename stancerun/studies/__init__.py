"""Many runs of one experiment: sweeps on Optuna, repeats (seeds, folds) and learning curves."""
