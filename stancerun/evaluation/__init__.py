"""Scoring: statistics and intervals, the analysis of a prediction, the baselines and the ensemble."""
