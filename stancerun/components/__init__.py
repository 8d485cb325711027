"""A run's plugin-built objects: building them from an experiment, rebuilding them for a saved run, preflight."""
