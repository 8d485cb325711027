"""Callbacks that need no training loop to test."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stancerun.config.experiment import build


def fake_run(metric="accuracy", greater=True):
    return SimpleNamespace(config={"training": {"metric_for_best_model": metric}}, greater_is_better=greater,
                           should_stop=False)


@pytest.mark.parametrize("values, stops_after", [
    ([0.5, 0.6, 0.6, 0.55], 4),  # two evaluations without improvement
    ([0.5, 0.6, 0.7, 0.8], None),
    ([0.5, 0.4, 0.6, 0.5, 0.5], 5),  # an improvement resets the count
])
def test_early_stopping_patience(builtin_registry, values, stops_after):
    callback = build(builtin_registry, "callbacks", {"use": "early_stopping", "patience": 2, "threshold": 0.0, "metric": None})
    run = fake_run()
    stopped = None
    for i, value in enumerate(values, 1):
        callback.on_evaluate(run, {"accuracy": value, "loss": 1.0})
        if run.should_stop and stopped is None:
            stopped = i
    assert stopped == stops_after


def test_early_stopping_on_loss_and_threshold(builtin_registry):
    callback = build(builtin_registry, "callbacks", {"use": "early_stopping", "patience": 1, "threshold": 0.1, "metric": "loss"})
    run = fake_run(metric="accuracy", greater=True)
    callback.on_evaluate(run, {"loss": 1.0})
    callback.on_evaluate(run, {"loss": 0.5})  # lower loss is better, by more than the threshold
    assert not run.should_stop
    callback.on_evaluate(run, {"loss": 0.45})  # better, but by less than the threshold
    assert run.should_stop


def test_early_stopping_unknown_metric_is_named(builtin_registry):
    callback = build(builtin_registry, "callbacks", {"use": "early_stopping", "patience": 1, "threshold": 0.0, "metric": "f9"})
    with pytest.raises(KeyError, match="f9"):
        callback.on_evaluate(fake_run(), {"loss": 1.0})
