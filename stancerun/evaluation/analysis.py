"""After training: how good, how sure, how calibrated, and where it fails.

Everything here works from logits and labels, so `stancerun evaluate` on new data reuses it
for a saved model exactly as a run does for its validation split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from stancerun.evaluation import stats
from stancerun.contracts import EvalPrediction
from stancerun.config.schema import EvaluationConfig, greater_is_better


@dataclass
class Scored:
    """One model's (or baseline's) predictions on a split, its metrics and their intervals."""

    logits: np.ndarray
    metrics: dict
    intervals: dict = field(default_factory=dict)  # metric -> {"value", "low", "high"}


def score(logits, labels, names, metric_fn, evaluation: EvaluationConfig) -> Scored:
    pred = EvalPrediction(logits, labels, names)
    if evaluation.bootstrap_resamples:
        intervals = stats.bootstrap_ci(pred, metric_fn, evaluation.bootstrap_resamples, evaluation.bootstrap_seed,
                                       evaluation.confidence)
        return Scored(logits, {k: v["value"] for k, v in intervals.items()}, intervals)
    return Scored(logits, metric_fn(pred))


def most_confused(labels: np.ndarray, predicted: np.ndarray, names: list[str], top: int = 5) -> list[dict]:
    """The label pairs the model mixes up most (true -> predicted), largest first."""
    pairs = {}
    for t, p in zip(labels, predicted):
        if t != p:
            pairs[(int(t), int(p))] = pairs.get((int(t), int(p)), 0) + 1
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"label": names[t], "predicted": names[p], "count": n, "share_of_label": n / int((labels == t).sum())}
            for (t, p), n in ranked]


def by_group(groups: list[str], logits, labels, names, metric_fn) -> dict[str, dict]:
    """The experiment's metrics per group (e.g. per stance target), with the group size."""
    found = {}
    groups = np.asarray(groups)
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        found[group] = {"n": int(rows.sum()), **metric_fn(EvalPrediction(logits[rows], labels[rows], names))}
    return found


def misclassified_jsonl(texts, pairs, labels, probabilities, names, pair_name="text_pair") -> str:
    """One JSON object per wrong prediction, most confident mistakes first."""
    predicted = probabilities.argmax(axis=1)
    wrong = [i for i in range(len(texts)) if predicted[i] != labels[i]]
    wrong.sort(key=lambda i: -probabilities[i].max())
    lines = []
    for i in wrong:
        row = {"text": texts[i]}
        if pairs is not None:
            row[pair_name] = pairs[i]
        row.update({"label": names[labels[i]], "prediction": names[predicted[i]],
                    "confidence": float(probabilities[i].max()),
                    "probabilities": {n: float(p) for n, p in zip(names, probabilities[i])}})
        lines.append(json.dumps(row, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


@dataclass
class Calibration:
    temperature: float  # 1.0 when calibration is off
    ece_before: float
    ece_after: float | None  # None when calibration is off
    reliability: stats.Reliability  # of the probabilities the model reports (after scaling, if any)
    reliability_before: stats.Reliability

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "ece_before": self.ece_before, "ece_after": self.ece_after}


def calibrate(logits, labels, fit: bool) -> Calibration:
    before = stats.reliability(stats.softmax(logits), labels)
    if not fit:
        return Calibration(1.0, before.ece, None, before, before)
    temperature = stats.fit_temperature(logits, labels)
    after = stats.reliability(stats.softmax(logits, temperature), labels)
    return Calibration(temperature, before.ece, after.ece, after, before)


def headline_key(config: dict, keys) -> str:
    """The metric an experiment is judged by: ``[evaluation] headline``, else the model-selection
    metric unless it is the loss, else the first metric key."""
    for candidate in (config["evaluation"].get("headline"), config["training"].get("metric_for_best_model")):
        if candidate and candidate.removeprefix("eval_") != "loss":
            return candidate.removeprefix("eval_")
    return next(k for k in keys if k != "loss")


def strongest(scored: dict[str, Scored], names: list[str], metric: str) -> str | None:
    """The baseline with the best ``metric`` on the validation split (the first one on a tie):
    the one a fine-tuned model has to beat. Chosen on validation, so the test verdict stays honest."""
    sign = 1 if greater_is_better(metric) else -1
    candidates = [n for n in names if metric in scored[n].metrics]
    return max(candidates, key=lambda n: sign * scored[n].metrics[metric], default=None)


def separable_from(model: Scored, baseline: Scored, labels, names, metric_fn, metric: str,
                   evaluation: EvaluationConfig) -> dict | None:
    """Paired bootstrap of model minus baseline on ``metric``: can this split tell them apart?"""
    if not evaluation.bootstrap_resamples:
        return None
    diff = stats.paired_bootstrap(EvalPrediction(model.logits, labels, names), EvalPrediction(baseline.logits, labels, names),
                                  metric_fn, evaluation.bootstrap_resamples, evaluation.bootstrap_seed, evaluation.confidence)
    return diff[metric]
