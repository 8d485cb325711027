"""Built-in metrics against hand-computed values, and EvalPrediction's contract."""

from __future__ import annotations

import numpy as np
import pytest

from stancerun import EvalPrediction
from stancerun.config.experiment import build

NAMES = ["against", "none", "favor"]
# true:      0  0  1  1  2  2
# predicted: 0  1  1  1  2  0
LOGITS = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 3.0
LABELS = np.array([0, 0, 1, 1, 2, 2])


@pytest.fixture
def pred():
    return EvalPrediction(LOGITS, LABELS, NAMES)


def metric(registry, **table):
    return build(registry, "metrics", table)


def test_eval_prediction_unpacks_like_transformers(pred):
    logits, labels = pred
    assert logits is pred.logits and labels is pred.labels
    assert pred.predictions.tolist() == [0, 1, 1, 1, 2, 0]
    np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0)
    assert pred.probabilities.argmax(axis=1).tolist() == pred.predictions.tolist()
    huge = EvalPrediction([[1000.0, 0.0]], [0])
    assert np.isfinite(huge.probabilities).all()


def test_accuracy(builtin_registry, pred):
    assert metric(builtin_registry, use="accuracy")(pred) == {"accuracy": pytest.approx(4 / 6)}


def test_f1_averages(builtin_registry, pred):
    # per class: against P=1/2 R=1/2 F=1/2; none P=2/3 R=1 F=0.8; favor P=1 R=1/2 F=2/3
    per_class = metric(builtin_registry, use="f1", average="per_class")(pred)
    assert per_class == pytest.approx({"f1_against": 0.5, "f1_none": 0.8, "f1_favor": 2 / 3})
    assert metric(builtin_registry, use="f1", average="macro")(pred) == {"f1_macro": pytest.approx((0.5 + 0.8 + 2 / 3) / 3)}
    assert metric(builtin_registry, use="f1", average="weighted")(pred)["f1_weighted"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metric(builtin_registry, use="precision", average="per_class")(pred) == pytest.approx(
        {"precision_against": 0.5, "precision_none": 2 / 3, "precision_favor": 1.0})
    assert metric(builtin_registry, use="recall", average="macro")(pred) == {"recall_macro": pytest.approx((0.5 + 1 + 0.5) / 3)}


def test_f1_favor_against_leaves_out_the_no_stance_class(builtin_registry, pred):
    assert metric(builtin_registry, use="f1_favor_against")(pred) == {"f1_favor_against": pytest.approx((0.5 + 2 / 3) / 2)}
    # naming the class explicitly gives the same; naming another class changes what is left out
    assert metric(builtin_registry, use="f1_favor_against", no_stance="none")(pred)["f1_favor_against"] == pytest.approx(7 / 12)
    assert metric(builtin_registry, use="f1_favor_against", no_stance="favor")(pred)["f1_favor_against"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="not one of"):
        metric(builtin_registry, use="f1_favor_against", no_stance="neutral")(pred)


def test_f1_favor_against_takes_the_stance_classes_by_name(builtin_registry, pred):
    # support/oppose data, or any two classes: the same score as leaving the third out
    assert metric(builtin_registry, use="f1_favor_against", classes=["favor", "against"])(pred)["f1_favor_against"] == \
        pytest.approx(7 / 12)
    assert metric(builtin_registry, use="f1_favor_against", classes=["against", "none"])(pred)["f1_favor_against"] == \
        pytest.approx(0.65)
    with pytest.raises(ValueError, match="not among the labels"):
        metric(builtin_registry, use="f1_favor_against", classes=["support", "oppose"])(pred)
    with pytest.raises(ValueError, match="not both"):
        metric(builtin_registry, use="f1_favor_against", classes=["favor"], no_stance="none")(pred)


def test_unpredicted_class_scores_zero_without_warning(builtin_registry):
    pred = EvalPrediction(np.eye(3)[[0, 0, 0]], [0, 1, 2], NAMES)
    assert metric(builtin_registry, use="precision", average="per_class")(pred)["precision_none"] == 0.0


def test_regression_style_errors(builtin_registry, pred):
    # |errors| on ids: 0 1 0 0 0 2
    assert metric(builtin_registry, use="mae")(pred) == {"mae": pytest.approx(3 / 6)}
    assert metric(builtin_registry, use="mse")(pred) == {"mse": pytest.approx(5 / 6)}
    one_output = EvalPrediction([[0.5], [2.0]], [1.0, 2.0])
    assert metric(builtin_registry, use="mae")(one_output) == {"mae": pytest.approx(0.25)}


@pytest.mark.parametrize("table", [
    {"use": "accuracy"}, {"use": "f1", "average": "macro"}, {"use": "f1", "average": "weighted"},
    {"use": "f1", "average": "per_class"}, {"use": "precision", "average": "per_class"},
    {"use": "recall", "average": "weighted"}, {"use": "f1_favor_against", "no_stance": None}, {"use": "mse"}, {"use": "mae"},
], ids=lambda t: "-".join(str(v) for v in t.values()))
def test_vectorised_twin_matches_scikit_learn(builtin_registry, table):
    from stancerun.evaluation.stats import confusions

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 3))
    labels = rng.integers(0, 3, 60)
    labels[:5] = 2  # every class present
    pred = EvalPrediction(logits, labels, NAMES)
    compute = metric(builtin_registry, **table)
    rows = rng.integers(0, 60, size=(25, 60))
    fast = compute.from_confusion(confusions(pred, rows), NAMES)
    for i, r in enumerate(rows):
        slow = compute(EvalPrediction(logits[r], labels[r], NAMES))
        assert {k: fast[k][i] for k in slow} == pytest.approx(slow)


def test_report_per_class_matches_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    from stancerun.reporting.report import per_class

    rng = np.random.default_rng(1)
    names = NAMES + ["never"]  # a fourth class: never true, never predicted
    logits = rng.normal(size=(50, 4))
    logits[:, 3] = -10
    labels = rng.integers(0, 3, 50)
    logits[labels == 1, 1] = -10  # class 1 is never predicted where it is true
    rows = per_class(logits, labels, names)
    expected = precision_recall_fscore_support(labels, logits.argmax(axis=1), labels=range(4), zero_division=0)
    for i, row in enumerate(rows):
        assert row["label"] == names[i] and isinstance(row["support"], int)
        assert [row[k] for k in ("precision", "recall", "f1", "support")] == pytest.approx([v[i] for v in expected])
