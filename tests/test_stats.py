"""The statistics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from stancerun import EvalPrediction
from stancerun.evaluation.stats import aggregate, bootstrap_ci, fit_temperature, nll, paired_bootstrap, reliability, softmax


def accuracy(pred):
    return {"accuracy": float(np.mean(pred.predictions == pred.labels))}


def one_hot_pred(correct: int, n: int) -> EvalPrediction:
    labels = np.zeros(n, dtype=int)
    predicted = np.where(np.arange(n) < correct, 0, 1)
    return EvalPrediction(np.eye(2)[predicted] * 4.0, labels, ["a", "b"])


def test_bootstrap_of_accuracy_matches_the_binomial_distribution():
    # Resampling n examples of which k are right gives accuracy ~ Binomial(n, k/n) / n.
    n, k = 50, 35
    ci = bootstrap_ci(one_hot_pred(k, n), accuracy, resamples=20000, seed=1)["accuracy"]
    assert ci["value"] == pytest.approx(0.7)
    low, high = sps.binom.ppf([0.025, 0.975], n, k / n) / n
    assert ci["low"] == pytest.approx(low, abs=1 / n + 1e-9)
    assert ci["high"] == pytest.approx(high, abs=1 / n + 1e-9)


def test_bootstrap_of_a_perfect_model_has_no_width_and_is_reproducible():
    pred = one_hot_pred(20, 20)
    assert bootstrap_ci(pred, accuracy, resamples=200, seed=3)["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    pred = one_hot_pred(12, 20)
    assert bootstrap_ci(pred, accuracy, resamples=200, seed=3) == bootstrap_ci(pred, accuracy, resamples=200, seed=3)


def test_paired_bootstrap_separates_real_differences_from_none():
    good, bad = one_hot_pred(90, 100), one_hot_pred(60, 100)
    diff = paired_bootstrap(good, bad, accuracy, resamples=2000, seed=0)["accuracy"]
    assert diff["difference"] == pytest.approx(0.3) and diff["significant"] and diff["p"] < 0.01
    same = paired_bootstrap(good, good, accuracy, resamples=500, seed=0)["accuracy"]
    assert same["difference"] == 0 and not same["significant"]
    # a one-example difference on 100 examples is noise
    close = paired_bootstrap(one_hot_pred(61, 100), bad, accuracy, resamples=2000, seed=0)["accuracy"]
    assert not close["significant"] and close["p"] > 0.3
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(good, one_hot_pred(5, 10), accuracy)


def test_ece_on_a_hand_made_example():
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.65, 0.35], [0.62, 0.38], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 0, 1])
    # 10 bins: (0.9,1.0] holds 0.95 (right) and 0.92 (wrong): |0.5 - 0.935| = 0.435, weight 2/5
    # (0.6,0.7] holds 0.65, 0.62 (both right) and 0.7 (right): |1 - 0.6566...| = 0.3433..., weight 3/5
    r = reliability(probs, labels, bins=10)
    expected = 2 / 5 * abs(0.5 - 0.935) + 3 / 5 * abs(1 - (0.65 + 0.62 + 0.7) / 3)
    assert r.ece == pytest.approx(expected)
    assert r.counts.sum() == 5 and r.counts[9] == 2 and r.counts[6] == 3


def test_temperature_scaling_lowers_nll_and_keeps_predictions():
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 1.0  # right about 60% of the time...
    logits *= 6.0  # ...but wildly overconfident
    t = fit_temperature(logits, labels)
    assert t > 2.0
    assert nll(logits, labels, t) < nll(logits, labels) - 0.5
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()
    assert reliability(softmax(logits, t), labels).ece < reliability(softmax(logits), labels).ece
    # brute force agrees with the optimiser
    grid = np.exp(np.linspace(-3, 3, 3001))
    best = grid[np.argmin([nll(logits, labels, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.01)


def test_aggregate_is_a_t_interval():
    values = [0.70, 0.74, 0.68, 0.72, 0.71]
    agg = aggregate(values)
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = 2.776445105 * sd / np.sqrt(5)  # t(0.975, 4)
    assert agg["mean"] == pytest.approx(mean) and agg["std"] == pytest.approx(sd)
    assert (agg["low"], agg["high"]) == pytest.approx((mean - half, mean + half))
    assert aggregate([0.5])["std"] == 0.0
