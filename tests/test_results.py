"""results.json as dataclasses (stancerun.rundir.results) and the run directory's names
(stancerun.rundir.layout): a round trip keeps every key, a version 1 file reads, a real run
writes version 2, and RunDir tells a run, an ONNX export and a sweep directory apart."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import tiny_experiment
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import run_experiment
from stancerun.errors import UsageError
from stancerun.rundir.layout import RunDir
from stancerun.rundir.results import FORMAT_VERSION, Results, TrainFigures, read

TRAIN = {"runtime_s": 1.5, "samples_per_second": 60.0, "global_step": 12, "epochs": 3.0, "total_steps_planned": 12,
         "steps_per_epoch": 4, "train_samples": 30, "eval_samples": 10, "best_step": 8, "best_metric": 0.7,
         "metric_for_best_model": "eval_accuracy", "restored_best": True, "stopped_early": False, "world_size": 1}
METRICS = {"loss": 0.9, "accuracy": 0.7, "f1_macro": 0.65}
INTERVAL = {"value": 0.7, "low": 0.5, "high": 0.9}
DIFFERENCE = {"difference": 0.1, "low": -0.1, "high": 0.3, "p": 0.2, "significant": False}

#: Every section a run writes, each as today's runs write it (a stacked run with a test split).
FULL = {
    "format_version": 2,
    "model": {"use": "hf", "source": "tiny", "adapter": "lora"},
    "baseline": {"loss": 1.1, "accuracy": 0.3},
    "final": METRICS,
    "train": {**TRAIN, "refit": {"train_samples": 40, "epochs": 2.0, "global_step": 10, "runtime_s": 1.0}},
    "test": METRICS,
    "baselines": {"majority": {"accuracy": 0.4}},
    "intervals": {"final": {"accuracy": INTERVAL}, "test": {"accuracy": INTERVAL}},
    "calibration": {"temperature": 1.2, "ece_before": 0.1, "ece_after": 0.05, "test_ece_before": 0.12,
                    "test_ece_after": 0.06},
    "analysis": {"metric": "accuracy",
                 "most_confused": [{"label": "a", "predicted": "b", "count": 2, "share_of_label": 0.5}],
                 "by_group": {"tax": {"n": 5, "accuracy": 0.6}}, "test_by_group": {"tax": {"n": 3, "accuracy": 0.7}}},
    "data": {"distribution": {"train": {"a": 3, "b": 2}}, "leaks": [{"split": "validation", "exact": 1, "normalised": 2,
                                                                     "examples": ["x"]}],
             "dropped_for_leakage": 0, "truncated": {"train": 1}},
    "ensemble": {"members": ["majority"], "weights": [1.0, 0.5], "bias": [0.0, 0.1], "offsets": [0.0, 0.0],
                 "decision": "argmax", "fine_tuned": {"validation": METRICS, "test": METRICS}},
    "verdict": {"metric": "accuracy", "baseline": "majority", "validation": DIFFERENCE, "test": None},
    "test_baselines": {"majority": {"accuracy": 0.35}},
    "plots": {"loss": "plots/loss.png", "confusion": "plots/confusion.png", "reliability": "plots/reliability.png"},
}


def test_a_round_trip_keeps_every_key_and_value():
    results = Results.from_json(copy.deepcopy(FULL))
    assert results.to_json() == FULL
    assert list(results.to_json()) == list(FULL)  # in the order it was written
    assert Results.from_json(results.to_json()) == results
    # read by attribute, not by key
    assert results.ensemble.fine_tuned.validation == METRICS and results.train.refit.global_step == 10
    assert results.verdict.differences == {"validation": DIFFERENCE, "test": None}  # null, but there
    assert results.analysis.most_confused[0].predicted == "b" and results.data.leaks[0].normalised == 2
    assert results.interval("final", "accuracy") == INTERVAL and results.interval("baseline", "accuracy") is None
    assert results.train.all_steps() == 22 and results.headline == "accuracy"


def test_keys_a_newer_writer_added_survive_a_round_trip():
    newer = copy.deepcopy(FULL)
    newer["format_version"] = 3
    newer["energy"] = {"kwh": 0.01}
    newer["train"]["tokens"] = 12345
    newer["calibration"]["method"] = "temperature"
    newer["ensemble"]["fine_tuned"]["extra_split"] = METRICS
    newer["verdict"]["note"] = "x"
    newer["analysis"]["most_confused"][0]["why"] = "y"
    results = Results.from_json(copy.deepcopy(newer))
    assert results.to_json() == newer
    assert results.extra == {"energy": {"kwh": 0.01}} and results.train.extra == {"tokens": 12345}
    assert results.format_version == 3


def test_a_version_1_file_reads_and_stays_as_it_was():
    old = {"baseline": {"accuracy": 0.3}, "final": {"accuracy": 0.7}, "train": {"runtime_s": 2.0, "global_step": 5}}
    results = Results.from_json(copy.deepcopy(old))
    assert results.format_version == 1
    assert results.final == {"accuracy": 0.7} and results.train.global_step == 5
    assert results.train.best_step is None and results.test is None and results.ensemble is None
    assert results.to_json() == old  # no format_version added, no null written for what it did not have


def test_sections_that_are_absent_are_not_written():
    results = Results(baseline={"accuracy": 0.3}, final={"accuracy": 0.7}, train=TrainFigures.from_json(TRAIN))
    assert results.to_json() == {"format_version": FORMAT_VERSION, "baseline": {"accuracy": 0.3},
                                 "final": {"accuracy": 0.7}, "train": TRAIN}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert):
    from stancerun.testing import write_tiny_data

    root = tmp_path_factory.mktemp("results")
    write_tiny_data(root / "data")
    path = tiny_experiment(root, tiny_bert, extra="[evaluation]\nbootstrap_resamples = 50\n")

    class Recorder:
        def on_train_end(self, run, results):
            self.results = results

    recorder = Recorder()
    run = run_experiment(load_experiment(path, ["training.num_train_epochs=1"]), output_dir=str(root / "run"),
                         quiet=True, callbacks=[recorder])
    return run, recorder.results


def test_a_run_writes_version_2_and_reads_through_the_dataclass(tiny_run):
    run, seen_by_callback = tiny_run
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["format_version"] == 2
    assert {"model", "baseline", "final", "train", "test", "baselines", "intervals", "calibration", "analysis", "data",
            "verdict", "test_baselines", "plots"} <= set(on_disk)
    results = read(run / "results.json")
    assert results.to_json() == on_disk and not results.extra
    assert results.final == on_disk["final"] and results.test == on_disk["test"]
    assert results.train.global_step == on_disk["train"]["global_step"] > 0
    assert results.model.use == "hf" and results.analysis.metric == "accuracy"
    assert set(results.verdict.differences) == {"validation", "test"}
    assert (run / results.plots.confusion).is_file()
    assert RunDir(run).read_results() == results
    # callbacks' on_train_end gets what results.json holds (SPEC section 4)
    assert seen_by_callback == on_disk


def test_run_dir_tells_the_three_kinds_apart(tiny_run, tmp_path):
    run, _ = tiny_run
    assert RunDir(run).kind == RunDir.RUN and RunDir.open(run).path == run
    assert RunDir(run).results == run / "results.json" and RunDir(run).model_info == run / "model" / "stancerun.json"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "stancerun.json").write_text(json.dumps({"format": "onnx"}))
    assert RunDir(tmp_path / "export").kind == RunDir.ONNX
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    assert RunDir.open(tmp_path / "sweep", RunDir.SWEEP).kind == RunDir.SWEEP
    # a run's model/ folder holds stancerun.json too, but is no export
    assert RunDir(run / "model").kind is None

    with pytest.raises(UsageError, match="a sweep directory, not a run directory or an ONNX export"):
        RunDir.open(tmp_path / "sweep", RunDir.RUN, RunDir.ONNX)


def test_run_dir_rejects_a_folder_that_is_none_of_them(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError) as raised:
        RunDir.open(tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}: not a run directory or an ONNX export or a sweep directory")
    for holds in ("model/", "config.toml with environment.json", 'format "onnx"', "sweep.json"):
        assert holds in message
    with pytest.raises(UsageError, match="no such directory"):
        RunDir.open(tmp_path / "missing")
