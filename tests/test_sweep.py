"""Sweeps: one run per combination, one leaderboard, and a restart that runs only what is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import tiny_experiment
from stancerun.cli import main
from stancerun.config import load_experiment
from stancerun.errors import ConfigError
from stancerun.sweep import combinations

SWEEP = """
[evaluation]
bootstrap_resamples = 100
plots = false
baselines = []

[sweep]
"adapter.r" = [2, 4, 8]
"training.learning_rate" = [1e-3, 5e-3]
"""


def test_grid_and_random_combinations():
    grid = combinations({"mode": "grid", "a.b": [1, 2, 3], "c.d": ["x", "y"]})
    assert len(grid) == 6 and grid[0] == {"a.b": 1, "c.d": "x"} and grid[-1] == {"a.b": 3, "c.d": "y"}
    sample = combinations({"mode": "random", "trials": 4, "seed": 1, "a.b": [1, 2, 3], "c.d": ["x", "y"]})
    assert len(sample) == 4 and all(s in grid for s in sample) and len({tuple(s.items()) for s in sample}) == 4
    assert sample == combinations({"mode": "random", "trials": 4, "seed": 1, "a.b": [1, 2, 3], "c.d": ["x", "y"]})


def test_every_combination_is_validated_before_anything_runs(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra='[sweep]\n"adapter.r" = [0, 8]\n"training.nope" = [1]\n')
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert "sweep run-01 adapter.r: expected an integer >= 1" in text and "training.nope: unknown key" in text


def test_sweep_killed_after_three_runs_restarts_with_the_remaining_three(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra=SWEEP)
    out = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stancerun", str(path), "--output-dir", str(out),
                                "--set", "training.num_train_epochs=1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "run-04").exists():  # run 4 starts once run 3 has finished
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    plan = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in plan["runs"]] == [f"run-0{i}" for i in range(1, 7)]
    done_before = {name: (out / name / "results.json").stat().st_mtime_ns for name in ("run-01", "run-02", "run-03")}
    assert not (out / "run-04" / "results.json").exists()

    assert main(["resume", str(out)]) == 0
    for name, mtime in done_before.items():
        assert (out / name / "results.json").stat().st_mtime_ns == mtime  # not run again
    assert all((out / f"run-0{i}" / "results.json").is_file() for i in range(1, 7))
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board["rows"]) == 6 and {tuple(r["params"].items()) for r in board["rows"]} == {
        tuple(c.items()) for c in combinations({"adapter.r": [2, 4, 8], "training.learning_rate": [1e-3, 5e-3]})}
    config = (out / "run-05" / "config.toml").read_text()
    assert "r = 8" in config and "learning_rate = 0.001" in config and "[sweep]" not in config
