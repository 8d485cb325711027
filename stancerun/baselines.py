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


def majority(train: Examples, evaluate: Examples, n_labels: int) -> np.ndarray:
    """Always the most frequent training label (ties: the lowest id)."""
    counts = np.bincount(np.asarray(train.labels), minlength=n_labels)
    logits = np.full((len(evaluate), n_labels), -10.0, dtype=np.float32)
    logits[:, int(counts.argmax())] = 0.0
    return logits


def tfidf(train: Examples, evaluate: Examples, n_labels: int, seed: int = 0) -> np.ndarray:
    """TF-IDF over word 1-2 grams + logistic regression (scikit-learn); log-probabilities as logits."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    features = vectorizer.fit_transform(_texts(train))
    model = LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced", random_state=seed)
    model.fit(features, train.labels)
    probs = np.full((len(evaluate), n_labels), 1e-9)
    probs[:, model.classes_] = model.predict_proba(vectorizer.transform(_texts(evaluate)))
    return np.log(probs).astype(np.float32)


def run_baselines(names: list[str], train: Examples, evaluate: Examples, n_labels: int, seed: int) -> dict[str, np.ndarray]:
    """Logits of each named baseline on ``evaluate``."""
    found = {}
    for name in names:
        if name == "majority":
            found[name] = majority(train, evaluate, n_labels)
        elif name == "tfidf":
            found[name] = tfidf(train, evaluate, n_labels, seed)
        else:  # the schema's Literal makes this unreachable from an experiment file
            raise ValueError(f"unknown baseline {name!r}")
    return found
