"""The statistics behind "how sure are we": bootstrap intervals, paired comparisons,
calibration error, temperature scaling, and aggregation over folds or seeds.

numpy (and scipy for the t quantile and the 1-D optimiser) only; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from stancerun.contracts import EvalPrediction

Metrics = Callable[[EvalPrediction], dict]


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` × ``n`` row indices drawn with replacement (one fixed stream per seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def confusions(pred: EvalPrediction, rows: np.ndarray) -> np.ndarray:
    """One confusion matrix (true × predicted) per row of resample indices: shape (B, C, C)."""
    n_classes = pred.logits.shape[1]
    cells = pred.labels[rows] * n_classes + pred.predictions[rows]  # (B, n)
    offsets = np.arange(len(rows))[:, None] * n_classes * n_classes
    counts = np.bincount((cells + offsets).ravel(), minlength=len(rows) * n_classes * n_classes)
    return counts.reshape(len(rows), n_classes, n_classes)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from confusion matrices ``cm[..., true, predicted]``
    (any leading batch shape), 0 where undefined, as scikit-learn's ``zero_division=0``.
    The one implementation behind the report's table and the built-in metrics."""
    cm = np.asarray(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    predicted, support = cm.sum(axis=-2).astype(float), cm.sum(axis=-1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(predicted > 0, tp / predicted, 0.0)
        r = np.where(support > 0, tp / support, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"precision": p, "recall": r, "f1": f, "support": support}


def resampled(pred: EvalPrediction, metrics: Metrics, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric on every resample. Metrics with a vectorised ``from_confusion`` twin (all
    built-ins) take one pass over confusion matrices; others are called once per resample."""
    fast = getattr(metrics, "from_confusion", None)
    if fast is not None and pred.logits.ndim == 2 and pred.logits.shape[1] > 1:
        return {k: np.asarray(v, dtype=float) for k, v in fast(confusions(pred, rows), pred.label_names).items()}
    found: dict[str, list[float]] = {}
    for r in rows:
        for key, value in metrics(EvalPrediction(pred.logits[r], pred.labels[r], pred.label_names)).items():
            found.setdefault(key, []).append(value)
    return {k: np.asarray(v, dtype=float) for k, v in found.items()}


def bootstrap_ci(pred: EvalPrediction, metrics: Metrics, resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, dict]:
    """Percentile bootstrap interval of every metric: resample the evaluation examples with
    replacement, recompute, take the central ``confidence`` share of the results."""
    point = metrics(pred)
    samples = resampled(pred, metrics, bootstrap_indices(len(pred), resamples, seed))
    result = {}
    for key, value in point.items():
        low, high = percentile_interval(np.asarray(samples[key]), confidence)
        result[key] = {"value": float(value), "low": low, "high": high}
    return result


def paired_bootstrap(a: EvalPrediction, b: EvalPrediction, metrics: Metrics, resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, dict]:
    """Difference a - b of every metric on the same examples, resampled together.

    ``significant`` is true when the interval of the difference excludes 0; ``p`` is the
    two-sided share of resamples on the other side of 0 from the observed difference."""
    if len(a) != len(b) or not np.array_equal(a.labels, b.labels):
        raise ValueError("a paired comparison needs the same examples, in the same order, with the same labels")
    point_a, point_b = metrics(a), metrics(b)
    keys = [k for k in point_a if k in point_b]
    rows = bootstrap_indices(len(a), resamples, seed)  # the same resamples for both: that is the pairing
    va, vb = resampled(a, metrics, rows), resampled(b, metrics, rows)
    result = {}
    for key in keys:
        values = va[key] - vb[key]
        low, high = percentile_interval(values, confidence)
        observed = point_a[key] - point_b[key]
        other_side = np.mean(values <= 0) if observed > 0 else np.mean(values >= 0)
        result[key] = {"difference": float(observed), "low": low, "high": high,
                       "p": float(min(1.0, 2 * other_side)), "significant": bool(low > 0 or high < 0)}
    return result


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class Reliability:
    """Per confidence bin: how confident the model was and how often it was right."""

    edges: np.ndarray
    confidence: np.ndarray  # mean confidence per bin (nan where empty)
    accuracy: np.ndarray  # accuracy per bin (nan where empty)
    counts: np.ndarray
    ece: float


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Expected calibration error over equal-width confidence bins:
    ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot occur with softmax
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, mean_acc = conf_sum / counts, acc_sum / counts
    gaps = np.where(counts > 0, np.abs(np.nan_to_num(mean_acc) - np.nan_to_num(mean_conf)), 0.0)
    ece = float((counts / max(len(labels), 1) * gaps).sum())
    return Reliability(edges, mean_conf, mean_acc, counts, ece)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels."""
    probs = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al., 2017).
    One parameter, so it changes confidence but never the predicted class."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(-4.0, 4.0), method="bounded")
    return float(math.exp(found.x))


def aggregate(values: list[float], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation and a t-interval of the mean over folds or seeds."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    n = len(array)
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    else:
        half = float("nan")
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n, "values": array.tolist()}
