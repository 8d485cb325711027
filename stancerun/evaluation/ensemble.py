"""``[ensemble]``: the fine-tuned model stacked with baselines, and a decision rule tuned for the
headline metric; both fitted on the validation split after training.

The shipped scores are ``w0 * log_softmax(model) + sum_i w_i * member_i + b``: one weight per
member and one offset per class, fitted by log-loss on validation (few parameters, because
validation sets are small); then, with ``decision = "headline"``, per-class offsets chosen on
validation to maximise the headline metric, which log-loss does not (F1 of the stance classes
rewards a different balance than accuracy). Everything here works on arrays, so a run, predict
and evaluate apply one implementation. Importing this module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stancerun.contracts import EvalPrediction

#: Offsets tried per class by the decision rule, in units of the stacked scores.
OFFSETS = np.round(np.arange(-1.5, 1.5001, 0.1), 2)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise, in float64 (scipy's)."""
    from scipy.special import log_softmax as rows

    return rows(np.asarray(logits, dtype=np.float64), axis=1)


@dataclass
class Stack:
    """How the shipped scores are made from the model's logits and each member's scores."""

    members: list[str]  # baseline row names, in the order of ``weights[1:]``
    weights: list[float]  # the model's first
    bias: list[float]  # per class, fitted with the weights
    offsets: list[float]  # per class, the decision rule's (zeros for argmax)

    def combine(self, logits: np.ndarray, member_scores: list[np.ndarray]) -> np.ndarray:
        z = self.weights[0] * log_softmax(logits)
        for weight, scores in zip(self.weights[1:], member_scores):
            z = z + weight * np.asarray(scores, dtype=np.float64)
        return (z + np.asarray(self.bias) + np.asarray(self.offsets)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"members": self.members, "weights": self.weights, "bias": self.bias, "offsets": self.offsets}

    @classmethod
    def from_dict(cls, data: dict) -> "Stack":
        return cls(list(data["members"]), [float(w) for w in data["weights"]], [float(b) for b in data["bias"]],
                   [float(o) for o in data["offsets"]])


def fit_weights(logits: np.ndarray, member_scores: list[np.ndarray], labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Weights (model first) and per-class biases minimising validation log-loss, with a small
    L2 pull on the biases; weights are kept non-negative (a member may only add evidence)."""
    from scipy.optimize import minimize

    features = [log_softmax(logits)] + [np.asarray(s, dtype=np.float64) for s in member_scores]
    n_classes, k = features[0].shape[1], len(features)
    labels = np.asarray(labels)

    def loss(params):
        weights, bias = params[:k], params[k:]
        z = sum(w * f for w, f in zip(weights, features)) + bias
        return -log_softmax(z)[np.arange(len(labels)), labels].mean() + 1e-3 * float(bias @ bias)

    start = np.concatenate([np.ones(1), np.zeros(k - 1), np.zeros(n_classes)])
    bounds = [(0.0, None)] * k + [(None, None)] * n_classes
    found = minimize(loss, start, method="L-BFGS-B", bounds=bounds)
    params = found.x if found.success or loss(found.x) <= loss(start) else start
    return [float(w) for w in params[:k]], [float(b) for b in params[k:]]


def tune_offsets(scores: np.ndarray, labels: np.ndarray, names: list[str], metric_fn, metric: str,
                 greater: bool = True, rounds: int = 2) -> list[float]:
    """Per-class offsets that maximise ``metric`` on these scores: coordinate ascent over
    :data:`OFFSETS`, the first class fixed at 0 (only differences matter). A move must improve
    the metric, and ties keep the smaller offset, so the rule stays near plain argmax."""
    sign = 1.0 if greater else -1.0
    offsets = np.zeros(scores.shape[1])

    def value(candidate):
        return sign * metric_fn(EvalPrediction(scores + candidate, labels, names))[metric]

    best = value(offsets)
    for _ in range(rounds):
        moved = False
        for c in range(1, scores.shape[1]):
            for step in sorted(OFFSETS, key=abs):
                candidate = offsets.copy()
                candidate[c] = step
                found = value(candidate)
                if found > best + 1e-12:
                    best, offsets, moved = found, candidate, True
        if not moved:
            break
    return [float(o) for o in offsets]


def fit(logits: np.ndarray, member_names: list[str], member_scores: list[np.ndarray], labels: np.ndarray,
        names: list[str], metric_fn, metric: str, decision: str, greater: bool = True) -> Stack:
    """The stack fitted on the validation split's logits, member scores and labels."""
    if member_scores:
        weights, bias = fit_weights(logits, member_scores, labels)
    else:
        weights, bias = [1.0], [0.0] * logits.shape[1]
    stack = Stack(list(member_names), weights, bias, [0.0] * logits.shape[1])
    if decision == "headline":
        stack.offsets = tune_offsets(stack.combine(logits, member_scores), labels, names, metric_fn, metric, greater)
    return stack


#: Where the members' files go inside the model directory: ensemble/<position>/.
DIRECTORY = "ensemble"


@dataclass
class Shipped:
    """A stack with its members, fitted (in a run) or restored (predict, evaluate)."""

    stack: Stack
    members: list  # stancerun.contracts.Baseline objects, in stack.members order
    records: dict  # member name -> the record that rebuilds it (use, plugin, distribution, version, options)

    def apply(self, logits: np.ndarray, examples) -> np.ndarray:
        """The shipped scores for these examples, from the fine-tuned model's logits."""
        from stancerun.evaluation.baselines import scores

        n = logits.shape[1]
        return self.stack.combine(logits, [scores(member, examples, n) for member in self.members])

    def info(self) -> dict:
        """The model/stancerun.json entry."""
        return {**self.stack.to_dict(), "records": self.records, "directory": DIRECTORY}

    def save(self, model_dir: Path) -> None:
        for position, member in enumerate(self.members):
            folder = Path(model_dir) / DIRECTORY / str(position)
            folder.mkdir(parents=True, exist_ok=True)
            member.save(folder)


def restore(info: dict, model_dir: Path, registry) -> Shipped | None:
    """The shipped stack of a saved model (None when it has none), its members rebuilt through
    the plugins that built them and loaded from their folders."""
    from stancerun.components.assembly import rebuild

    entry = info.get("ensemble")
    if not entry:
        return None
    stack = Stack.from_dict(entry)
    members = []
    for position, name in enumerate(stack.members):
        member = rebuild(registry, "baselines", entry["records"][name])
        member.restore(Path(model_dir) / entry.get("directory", DIRECTORY) / str(position), list(info["labels"]))
        members.append(member)
    return Shipped(stack, members, entry["records"])
