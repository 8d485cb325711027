"""Sweeps on Optuna: the plan and its validation, two workers on one study (journal file and
PostgreSQL), pruning (in one process and across two), a worker killed mid-trial, a failing trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_experiment
from stancerun.config import sweepplan
from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.errors import ConfigError

QUIET = """
[evaluation]
bootstrap_resamples = 100
plots = false
baselines = []
"""
GRID = QUIET + """
[sweep]
"adapter.r" = [2, 4]
"training.learning_rate" = [1e-3, 5e-3]
"""
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def trials(out: Path) -> dict:
    return json.loads((out / "trials.json").read_text())


def grid_points() -> set:
    return {tuple(p.items()) for p in sweepplan.grid({"adapter.r": [2, 4], "training.learning_rate": [1e-3, 5e-3]})}


def test_plan_grid_ranges_and_the_points_validated():
    table = {"sampler": "tpe", "trials": 5, "adapter.r": [4, 8], "training.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
             "adapter.target_modules": [["query"], ["query", "value"]]}
    assert sweepplan.parameters(table).keys() == {"adapter.r", "training.learning_rate", "adapter.target_modules"}
    points = sweepplan.validation_points(table)
    assert len(points) == 2 * 2 * 2 and {p["training.learning_rate"] for p in points} == {1e-5, 1e-3}
    assert sweepplan.grid({"a": [1, 2, 3], "b": ["x", "y"]})[0] == {"a": 1, "b": "x"}
    assert sweepplan.range_kind({"low": 1, "high": 8}) == "int" and sweepplan.range_kind({"low": 1, "high": 8.0}) == "float"
    assert sweepplan.range_problems({"low": 0, "high": 1, "log": True}) == ["a log range needs low > 0, got low = 0"]
    assert sweepplan.range_problems({"low": 2, "high": 1})[0].startswith("a range needs low < high")
    choice = sweepplan.encode(["query", "value"])  # Optuna's choices are scalars: a list travels as JSON
    assert choice == '["query", "value"]' and sweepplan.decode(choice, [["query"], ["query", "value"]]) == ["query", "value"]


def test_every_point_and_setting_is_validated_before_anything_runs(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra='[sweep]\n"adapter.r" = [0, 8]\n"training.nope" = [1]\n')
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert "sweep point 1 (adapter.r=0, training.nope=1) adapter.r: expected an integer >= 1" in text
    assert "training.nope: unknown key" in text
    # a range is validated at both ends; ranges need a sampler that samples
    path = tiny_experiment(tmp_path, tiny_bert, extra='[sweep]\n"adapter.r" = { low = 0, high = 8 }\npruner = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert 'a range needs sampler = "tpe" or "random"' in text and "sweep.pruner" in text
    path = tiny_experiment(tmp_path, tiny_bert, extra='[sweep]\nsampler = "tpe"\ntrials = 2\n"adapter.r" = { low = 0, high = 8 }\n')
    with pytest.raises(ConfigError, match=r"sweep point 1 \(adapter.r=0\) adapter.r: expected an integer >= 1"):
        load_experiment(path)
    path = tiny_experiment(tmp_path, tiny_bert, extra='[sweep]\nsampler = "random"\n"adapter.r" = [2]\n')
    with pytest.raises(ConfigError, match="needs trials >= 1"):
        load_experiment(path)


POSTGRES = os.environ.get("STANCERUN_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES and not os.environ.get("STANCERUN_REQUIRE_POSTGRES"),
                                    reason="no PostgreSQL server: .ci/run starts one and sets STANCERUN_TEST_POSTGRES_URL")


@pytest.mark.parametrize("storage", ["journal", pytest.param("postgresql", marks=needs_postgres)])
def test_two_workers_share_one_study(tmp_path, tiny_bert, stance_data, storage):
    path = tiny_experiment(tmp_path, tiny_bert, extra=GRID)
    out = tmp_path / "sweep"
    given = ["--storage", POSTGRES] if storage == "postgresql" else []
    assert main(["run", str(path), "--output-dir", str(out), "--workers", "2", "--set", "training.num_train_epochs=2",
                 *given]) == 0
    summary = trials(out)
    rows = summary["rows"]
    assert [r["number"] for r in rows] == [0, 1, 2, 3] and summary["trials"] == 4
    assert {r["state"] for r in rows} == {"complete"}
    assert {tuple(r["params"].items()) for r in rows} == grid_points()  # each grid point exactly once
    if storage == "journal":
        assert (out / "journal.log").is_file() and summary["storage"] == "journal.log"
    else:
        assert not (out / "journal.log").exists() and summary["storage"].startswith("postgresql+psycopg2://")
    # both workers took trials (their leases name two processes)
    import optuna

    from stancerun.studies.sweep import LEASE, open_sweep

    study = open_sweep(str(out), storage=POSTGRES if storage == "postgresql" else None).study()
    assert len({t.system_attrs[LEASE]["pid"] for t in study.trials}) == 2
    assert optuna.trial.TrialState.COMPLETE in {t.state for t in study.trials}
    for r in rows:
        config = (out / r["run"] / "config.toml").read_text()
        assert f"r = {r['params']['adapter.r']}" in config and "[sweep]" not in config
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board["rows"]) == 4 and all("params" in row for row in board["rows"])
    best = summary["best"]
    assert best["value"] == board["rows"][0]["value"]
    assert main(["validate", str(out / "best.toml")]) == 0  # runnable as it is
    assert "## Leaderboard" in (out / "report.md").read_text()


@needs_postgres
def test_a_worker_joins_by_the_postgresql_url(tmp_path, tiny_bert, stance_data):
    assert POSTGRES, "STANCERUN_REQUIRE_POSTGRES is set but STANCERUN_TEST_POSTGRES_URL is not"
    extra = QUIET + '[sweep]\nsampler = "random"\ntrials = 4\nseed = 3\n"adapter.r" = [2, 4]\n' \
                    '"training.learning_rate" = { low = 1e-3, high = 1e-2, log = true }\n'
    path = tiny_experiment(tmp_path, tiny_bert, extra=extra)
    out = tmp_path / "sweep"
    first = subprocess.Popen([sys.executable, "-m", "stancerun", "run", str(path), "--output-dir", str(out), "--storage",
                              POSTGRES, "--set", "training.num_train_epochs=2"], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / "sweep.json").is_file():
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    study = json.loads((out / "sweep.json").read_text())["study"]
    joined = subprocess.run([sys.executable, "-m", "stancerun", "sweep", "join", POSTGRES, "--study", study, "--quiet"],
                            env=ENV, capture_output=True, text=True, timeout=600)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert first.wait(timeout=600) == 0, first.stdout.read()[-3000:]
    import optuna

    studied = optuna.load_study(study_name=study, storage=POSTGRES)
    numbers = [t.number for t in studied.trials]
    assert sorted(numbers) == [0, 1, 2, 3] and {t.state.name for t in studied.trials} == {"COMPLETE"}
    assert "started" in joined.stdout  # the joining worker ran at least one trial
    assert all(1e-3 <= t.params["training.learning_rate"] <= 1e-2 for t in studied.trials)
    assert trials(out)["trials"] == 4 and "password" not in (out / "config.toml").read_text()


PRUNE = QUIET + """
[sweep]
"training.learning_rate" = [1e-9, 1.0]
pruner = "median"
startup_trials = 1
"""


def pruning_experiment(tmp_path, tiny_bert) -> Path:
    # The objective is the validation loss: a learning rate of 1.0 sends it far above where it began,
    # where the first trial (1e-9) keeps it.
    path = tiny_experiment(tmp_path, tiny_bert, extra=PRUNE)
    path.write_text(path.read_text().replace('metric_for_best_model = "accuracy"', 'metric_for_best_model = "loss"'))
    return path


def test_a_trial_whose_curve_is_worse_is_pruned(tmp_path, tiny_bert, stance_data):
    path = pruning_experiment(tmp_path, tiny_bert)
    out = tmp_path / "sweep"
    assert main(["run", str(path), "--output-dir", str(out)]) == 0
    rows = trials(out)["rows"]
    assert [r["state"] for r in rows] == ["complete", "pruned"]
    full, pruned = rows
    assert pruned["steps"] < full["steps"] and "pruned at step" in pruned["note"]
    status = json.loads((out / "trial-001" / "status.json").read_text())
    assert status["status"] == "pruned" and (out / "trial-001" / "metrics.jsonl").is_file()
    assert not (out / "trial-001" / "results.json").exists()
    assert trials(out)["direction"] == "minimize"


def test_pruning_stops_every_accelerate_process(tmp_path, tiny_bert, stance_data):
    from test_distributed import free_port

    path = pruning_experiment(tmp_path, tiny_bert)
    out = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), "-m", "stancerun", "run", str(path),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[:4000]  # the processes speak first, then the launcher
    rows = trials(out)["rows"]
    assert [r["state"] for r in rows] == ["complete", "pruned"]
    assert json.loads((out / "trial-000" / "environment.json").read_text())["world_size"] == 2


def test_a_worker_killed_mid_trial_is_run_again_on_resume(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra=GRID)
    out = tmp_path / "sweep"
    process = subprocess.Popen([sys.executable, "-m", "stancerun", str(path), "--output-dir", str(out),
                                "--set", "training.num_train_epochs=2"], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "trial-001" / "status.json").is_file():  # trial 1 is running
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = (out / "trial-000" / "results.json").stat().st_mtime_ns

    assert main(["resume", str(out)]) == 0
    summary = trials(out)
    rows = {r["number"]: r for r in summary["rows"]}
    assert rows[1]["state"] == "failed" and rows[1]["requeued"] and "stopped without finishing it" in rows[1]["note"]
    assert rows[4]["retry_of"] == 1 and rows[4]["params"] == rows[1]["params"]
    complete = [r for r in summary["rows"] if r["state"] == "complete"]
    assert {tuple(r["params"].items()) for r in complete} == grid_points() and len(complete) == 4
    assert summary["trials"] == 4  # every trial accounted for: the killed one counts once, as its retry
    assert (out / "trial-000" / "results.json").stat().st_mtime_ns == finished_before  # not run again

    report = (out / "report.md").stat().st_mtime_ns
    assert main(["resume", str(out)]) == 0  # a finished sweep: nothing to do
    assert (out / "report.md").stat().st_mtime_ns == report and len(trials(out)["rows"]) == 5


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_bert, stance_data):
    from stancerun.studies.sweep_workers import run_sweep

    extra = QUIET + f'[sweep]\npruner = "hyperband"\n"model.name" = ["{tiny_bert}", "{tmp_path / "no-such-model"}"]\n'
    path = tiny_experiment(tmp_path, tiny_bert, extra=extra)
    out = run_sweep(load_experiment(path), output_dir=str(tmp_path / "sweep"))
    rows = trials(out)["rows"]
    assert [r["state"] for r in rows] == ["complete", "failed"] and "no-such-model" in rows[1]["note"]
    assert (out / "best.toml").is_file() and (out / "report.md").is_file()


def test_a_storage_that_cannot_be_opened_is_one_clear_error_and_leaves_nothing(tmp_path, tiny_bert, stance_data, capsys):
    from stancerun.studies.sweep import public_url

    assert public_url("postgresql+psycopg2://sweeper:s3cret@db-host:5432/runs") == "postgresql+psycopg2://sweeper@db-host:5432/runs"
    path = tiny_experiment(tmp_path, tiny_bert, extra=GRID)
    out = tmp_path / "sweep"
    code = main(["run", str(path), "--output-dir", str(out), "--storage", "postgresql+psycopg2://sweeper:s3cret@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 2 and "sweep storage postgresql+psycopg2://sweeper@127.0.0.1:1/x: cannot open it" in err
    assert "s3cret" not in err and not out.exists()
    assert main(["run", str(tiny_experiment(tmp_path, tiny_bert)), "--workers", "2"]) == 2
    assert "--workers and --storage are for sweeps" in capsys.readouterr().err
