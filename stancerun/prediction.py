"""EvalPrediction: what a metric receives. numpy is imported lazily (no torch here at all)."""

from __future__ import annotations

from typing import Sequence


class EvalPrediction:
    """Logits and labels of one evaluation.

    Unpacks as ``logits, labels = pred`` so a transformers ``compute_metrics`` ports unchanged.
    """

    def __init__(self, logits, labels, label_names: Sequence[str] = ()):
        import numpy as np

        self.logits = np.asarray(logits)
        self.labels = np.asarray(labels)
        self.label_names = list(label_names)

    @property
    def predictions(self):
        """Predicted class ids (argmax), or the raw scores of a one-output regression head."""
        if self.logits.ndim == 2 and self.logits.shape[1] == 1:
            return self.logits[:, 0]
        return self.logits.argmax(axis=-1)

    @property
    def probabilities(self):
        """Softmax over the classes, computed stably."""
        import numpy as np

        shifted = self.logits - self.logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)

    def __iter__(self):
        return iter((self.logits, self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"EvalPrediction(n={len(self)}, classes={self.logits.shape[-1] if self.logits.ndim else 0})"
