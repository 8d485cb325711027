"""The baselines an experiment is scored against, built through the registry like every other
component (:class:`stancerun.contracts.Baseline`): each is fitted once on the training split and
scored on every evaluated split, so a fine-tuned model is always shown beside what a few seconds
of scikit-learn reach."""

from __future__ import annotations

import numpy as np

from stancerun.data.rows import Examples
from stancerun.config.schema import baseline_rows


def fit(registry, entries: list, train: Examples, labels: list[str]) -> dict:
    """Row name -> a fitted baseline."""
    from stancerun.config.experiment import build

    fitted = {}
    for name, table in baseline_rows(entries).items():
        baseline = build(registry, "baselines", table)
        baseline.fit(train, list(labels))
        fitted[name] = baseline
    return fitted


def scores(baseline, examples: Examples, n_labels: int) -> np.ndarray:
    """A baseline's N x C scores, checked: a plugin's wrong shape is named, not broadcast."""
    out = np.asarray(baseline.predict(examples), dtype=np.float32)
    if out.shape != (len(examples), n_labels):
        raise ValueError(f"baseline {type(baseline).__name__}.predict returned shape {out.shape}, "
                         f"expected ({len(examples)}, {n_labels})")
    return out


def score_all(fitted: dict, splits: dict[str, Examples], n_labels: int) -> dict[str, dict[str, np.ndarray]]:
    """split -> row name -> scores."""
    return {split: {name: scores(b, examples, n_labels) for name, b in fitted.items()} for split, examples in splits.items()}
