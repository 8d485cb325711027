"""The wandb and tensorboard callbacks, offline: what they log is read back."""

from __future__ import annotations

import json
import time

import pytest

from conftest import tiny_experiment
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import run_experiment

QUIET = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"


def test_tensorboard_logs_are_read_back(tmp_path, tiny_bert, stance_data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tiny_experiment(tmp_path, tiny_bert, extra='[[callbacks]]\nuse = "tensorboard"\n' + QUIET)
    run = run_experiment(load_experiment(path), output_dir=str(tmp_path / "run"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/accuracy", "eval/loss", "final/accuracy"} <= tags
    assert [e.step for e in events.Scalars("eval/accuracy")] == [9, 18, 27]
    final = json.loads((run / "results.json").read_text())["final"]["accuracy"]
    assert events.Scalars("final/accuracy")[-1].value == pytest.approx(final)
    assert "config" in "".join(events.Tags()["tensors"])


def test_wandb_offline_run_holds_config_summary_and_report(tmp_path, tiny_bert, stance_data, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    path = tiny_experiment(tmp_path, tiny_bert, extra='[[callbacks]]\nuse = "wandb"\nproject = "stancerun-tests"\n' + QUIET)
    run = run_experiment(load_experiment(path), output_dir=str(tmp_path / "run"))
    offline = next((run / "wandb").glob("offline-run-*"))
    # wandb's offline record log: protobuf records whose keys and strings are stored as written
    record_file = next(offline.glob("run-*.wandb"))
    deadline = time.time() + 60
    while b"final/accuracy" not in record_file.read_bytes() and time.time() < deadline:
        time.sleep(0.5)  # wandb's service process writes the record log on its own schedule
    records = record_file.read_bytes()
    for text in ("stancerun-tests", "learning_rate", "train/loss", "eval/accuracy", "final/accuracy", "tiny-report", "report.md"):
        assert text.encode() in records, text
    assert records.count(b"eval/accuracy") >= 3  # one history row per evaluation
