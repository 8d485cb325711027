"""Metric ``acme_balanced_error``: 1 - the mean recall over the labels that occur (the balanced
error rate). Unlike accuracy, a model that always predicts the largest label scores badly.

Lower is better. stancerun infers that only for keys ending in loss, mse or mae, so to select
the best checkpoint by it set ``training.metric_for_best_model = "acme_balanced_error"`` and
``training.greater_is_better = false``.
"""

from __future__ import annotations

KEY = "acme_balanced_error"  # the key in results.json: prefixed, so it clashes with no other metric's


def acme_balanced_error():
    """1 - mean recall over the labels present (the balanced error rate; lower is better)."""

    def from_confusion(cm, label_names):
        # cm[..., true, predicted], with any leading batch shape: the report's bootstrap intervals
        # call this on thousands of resampled matrices at once, which is why it is vectorised.
        import numpy as np

        support = cm.sum(axis=-1)
        hits = np.diagonal(cm, axis1=-2, axis2=-1)
        recall = np.divide(hits, support, out=np.zeros(support.shape), where=support > 0)
        present = np.maximum((support > 0).sum(axis=-1), 1)
        return {KEY: 1.0 - recall.sum(axis=-1) / present}

    def compute(pred):  # pred: stancerun.EvalPrediction
        import numpy as np

        n = pred.logits.shape[-1]
        cm = np.zeros((n, n))
        np.add.at(cm, (np.asarray(pred.labels, dtype=int), np.asarray(pred.predictions, dtype=int)), 1)
        return {KEY: float(from_confusion(cm, pred.label_names)[KEY])}  # a plain float, not numpy's

    compute.from_confusion = from_confusion  # optional: makes bootstrap intervals fast
    return compute
