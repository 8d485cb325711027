"""The hf_evaluate metric: a Hugging Face evaluate metric as a [[metrics]] entry, offline.

The suite never reaches the hub: every metric here is a script written into tmp_path, and a hub
name that is not in the local cache must stop validate with one message (exit 2)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import tiny_experiment
from stancerun import EvalPrediction
from stancerun.config.experiment import build, load_experiment
from stancerun.errors import UsageError

pytest.importorskip("evaluate")

NAMES = ["against", "none", "favor"]
LOGITS = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 3.0  # predicted 0 1 1 1 2 0
LABELS = np.array([0, 0, 1, 1, 2, 2])  # 4 of 6 right

# A local evaluate metric script, as evaluate.load("<dir>") finds it offline: <dir>/<dir name>.py
# holding one evaluate.Metric subclass. `scale` is an option of its compute(); `per_class` is a
# list result (one item per label) and `note` a string, which the bridge leaves out.
SCRIPT = '''
import datasets
import evaluate


class MyAcc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of right predictions", citation="", inputs_description="predictions, references",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, scale=1.0, classes=None):
        right = [int(p == r) for p, r in zip(predictions, references)]
        result = {"my_acc": scale * sum(right) / len(right), "note": "hand-written"}
        if classes is not None:
            result["per_class"] = [sum(r for r, t in zip(right, references) if t == c) for c in range(classes)]
        return result
'''


@pytest.fixture
def my_acc(tmp_path):
    directory = tmp_path / "my_acc"
    directory.mkdir()
    (directory / "my_acc.py").write_text(SCRIPT)
    return directory


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def metric(registry, **table):
    return build(registry, "metrics", {"use": "hf_evaluate", **table})


def test_a_local_script_metric_equals_the_builtin(builtin_registry, my_acc):
    pred = EvalPrediction(LOGITS, LABELS, NAMES)
    builtin = build(builtin_registry, "metrics", {"use": "accuracy"})(pred)["accuracy"]
    assert metric(builtin_registry, name=str(my_acc))(pred) == {"my_acc": pytest.approx(builtin)}
    # prefix: prepended as written, so the keys never meet a built-in's
    assert metric(builtin_registry, name=str(my_acc), prefix="hf_")(pred) == {"hf_my_acc": pytest.approx(4 / 6)}


def test_options_pass_through_to_compute(builtin_registry, my_acc):
    pred = EvalPrediction(LOGITS, LABELS, NAMES)
    assert metric(builtin_registry, name=str(my_acc), scale=100)(pred) == {"my_acc": pytest.approx(400 / 6)}
    # a list result: one key per label when it has one item per label, else by position
    found = metric(builtin_registry, name=str(my_acc), classes=3)(pred)
    assert found == {"my_acc": pytest.approx(4 / 6), "per_class_against": 1.0, "per_class_none": 2.0,
                     "per_class_favor": 1.0}
    assert set(metric(builtin_registry, name=str(my_acc), classes=2)(pred)) == {"my_acc", "per_class_0", "per_class_1"}
    # an option compute() does not take fails when the metric is built, not at the first evaluation
    with pytest.raises(UsageError, match=r"takes no option 'scael' \(its options: scale, classes\)"):
        metric(builtin_registry, name=str(my_acc), scael=2)
    with pytest.raises(UsageError, match="come from the evaluation"):
        metric(builtin_registry, name=str(my_acc), references=[0, 1])
    # null: options passed as None (TOML has no null)
    assert metric(builtin_registry, name=str(my_acc), null=["classes"])(pred) == {"my_acc": pytest.approx(4 / 6)}


def test_a_missing_local_script_is_a_usage_error(builtin_registry, tmp_path):
    with pytest.raises(UsageError, match="no evaluate metric script at .*nothing/nothing.py"):
        metric(builtin_registry, name=str(tmp_path / "nothing"))


def test_offline_a_hub_metric_loads_from_evaluates_cache(builtin_registry, tmp_path, monkeypatch):
    import evaluate.config

    from stancerun_metrics import hf_evaluate

    # the look-up reads where evaluate itself keeps downloaded scripts
    assert hf_evaluate._hf_modules_cache() == evaluate.config.HF_MODULES_CACHE
    # a download of hub metric "my_acc": <cache>/evaluate_modules/metrics/evaluate-metric--my_acc/<hash>/my_acc.py
    root = tmp_path / "modules" / "evaluate_modules" / "metrics"
    for hash, scale in (("a" * 64, "1.0"), ("b" * 64, "2.0")):  # the newer copy wins, as in evaluate
        script = root / "evaluate-metric--my_acc" / hash / "my_acc.py"
        script.parent.mkdir(parents=True)
        script.write_text(SCRIPT.replace("scale=1.0", f"scale={scale}"))
    os.utime(root / "evaluate-metric--my_acc" / ("a" * 64) / "my_acc.py", (1, 1))
    monkeypatch.setattr(hf_evaluate, "_modules_cache", lambda: root)
    monkeypatch.chdir(tmp_path)  # "my_acc" is no directory here: a hub name
    pred = EvalPrediction(LOGITS, LABELS, NAMES)
    assert metric(builtin_registry, name="my_acc")(pred) == {"my_acc": pytest.approx(8 / 6)}


def _not_cached(name):
    from stancerun_metrics.hf_evaluate import _cached_script, _modules_cache

    assert _cached_script(name) is None, f"{name} is in {_modules_cache()}: the offline test needs it absent"


def test_validate_offline_without_the_cache_exits_2_naming_the_builtins(tmp_path, tiny_bert, stance_data, capsys,
                                                                        monkeypatch):
    from stancerun.cli.main import main

    _not_cached("matthews_correlation")
    _not_cached("f1")
    monkeypatch.chdir(tmp_path)
    extra = '[[metrics]]\nuse = "hf_evaluate"\nname = "matthews_correlation"\n'
    path = tiny_experiment(tmp_path, tiny_bert, extra=extra)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1, err  # one message
    assert "matthews_correlation" in err and "not in the local cache" in err and "HF_EVALUATE_OFFLINE=1" in err
    assert "accuracy, f1, precision, recall, f1_favor_against, mse, mae" in err
    assert "Traceback" not in err
    # an evaluate metric with a scikit-learn twin names that one
    path.write_text(path.read_text().replace('"matthews_correlation"', '"f1"\naverage = "macro"'))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'f1' is not in the local cache" in err and '[[metrics]] use = "f1"' in err and "Traceback" not in err


def test_a_short_run_records_the_evaluate_metric(tmp_path, tiny_bert, stance_data, my_acc, monkeypatch):
    from stancerun.engine.run import run_experiment

    monkeypatch.chdir(tmp_path)
    extra = f'[[metrics]]\nuse = "hf_evaluate"\nname = "{my_acc}"\nprefix = "hf_"\n'
    path = tiny_experiment(tmp_path, tiny_bert, adapter="frozen", extra=extra)
    experiment = load_experiment(path, ["training.num_train_epochs=1", "training.metric_for_best_model=hf_my_acc",
                                        "evaluation.bootstrap_resamples=20", "evaluation.baselines=[\"majority\"]",
                                        "evaluation.plots=false", 'training.save_strategy="no"'])
    run = run_experiment(experiment, output_dir=str(tmp_path / "run"))
    results = json.loads((run / "results.json").read_text())
    for scores in (results["baseline"], results["final"], results["test"]):
        assert scores["hf_my_acc"] == pytest.approx(scores["accuracy"])
    assert "hf_my_acc" in results["intervals"]["final"]  # the bootstrap calls it once per resample


def test_the_plugin_does_not_import_evaluate():
    import subprocess
    import sys

    code = ("import sys; from stancerun.registry.discovery import get_registry; get_registry().get('metrics', 'hf_evaluate');"
            "print('evaluate' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STANCERUN_LOAD_PLUGINS": ""})
    assert done.stdout.strip() == "False", done.stderr
