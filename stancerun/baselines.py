"""Trivial baselines scored on the same split as the fine-tuned model: a model that cannot
beat these has learned nothing worth its GPU hours."""

from __future__ import annotations

import numpy as np

from stancerun.datasets import Examples

BASELINES = ("majority", "tfidf")


def _texts(examples: Examples) -> list[str]:
    # With a text pair (the stance target), the target is part of what the baseline sees too.
    if examples.pairs is None:
        return examples.texts
    return [f"{pair} || {text}" for pair, text in zip(examples.pairs, examples.texts)]


def majority(train: Examples, n_labels: int):
    """Always the most frequent training label (ties: the lowest id)."""
    winner = int(np.bincount(np.asarray(train.labels), minlength=n_labels).argmax())

    def predict(examples: Examples) -> np.ndarray:
        logits = np.full((len(examples), n_labels), -10.0, dtype=np.float32)
        logits[:, winner] = 0.0
        return logits

    return predict


def tfidf(train: Examples, n_labels: int, seed: int = 0):
    """TF-IDF over word 1-2 grams + logistic regression (scikit-learn); log-probabilities as logits."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    model = LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced", random_state=seed)
    model.fit(vectorizer.fit_transform(_texts(train)), train.labels)

    def predict(examples: Examples) -> np.ndarray:
        probs = np.full((len(examples), n_labels), 1e-9)
        probs[:, model.classes_] = model.predict_proba(vectorizer.transform(_texts(examples)))
        return np.log(probs).astype(np.float32)

    return predict


def run_baselines(names: list[str], train: Examples, splits: dict[str, Examples], n_labels: int,
                  seed: int) -> dict[str, dict[str, np.ndarray]]:
    """split -> baseline -> logits: each baseline is fitted once on ``train`` and scored on every split."""
    fitted = {}
    for name in names:
        if name == "majority":
            fitted[name] = majority(train, n_labels)
        elif name == "tfidf":
            fitted[name] = tfidf(train, n_labels, seed)
        else:  # the schema's Literal makes this unreachable from an experiment file
            raise ValueError(f"unknown baseline {name!r}")
    return {split: {name: predict(examples) for name, predict in fitted.items()} for split, examples in splits.items()}
