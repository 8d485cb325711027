"""Leases on sweep trials under faults: a heartbeat outlives a storage that fails for a while, a
worker whose trial was taken from it goes on with the next one, and staleness is judged by the
storage's clock, so a worker whose clock is 10 minutes off neither loses a live trial nor keeps
a dead one (journal file, SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from conftest import tiny_experiment
from stancerun.config.experiment import load_experiment
from stancerun.studies import leases, sweep
from stancerun.studies.sweep_workers import run_sweep
from test_sweep import GRID, POSTGRES, needs_postgres, trials

TEN_MINUTES = 600


def storage_of(kind: str, tmp_path):
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    url = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else POSTGRES
    return optuna.storages.get_storage(optuna.storages.RDBStorage(url))


def running_trial(storage) -> tuple[optuna.Study, int]:
    """A study (named afresh: PostgreSQL is one database for every test) with one running trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"leases-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(storage=storage, study_name=name)
    study.enqueue_trial({"x": 1})
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), 0)
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    return study, trial_id


def skew_clock(monkeypatch, seconds: float) -> None:
    """This process's clock (as Python code reads it) `seconds` off the true time."""
    true_time = time.time
    monkeypatch.setattr(time, "time", lambda: true_time() + seconds)


def judge(tmp_path, storage, study) -> sweep.Sweep:
    """Another worker, as far as the study is concerned (the swept values it would queue again)."""
    return sweep.Sweep(tmp_path, SimpleNamespace(config={"sweep": {"x": [1, 2]}}), study.study_name, None,
                       _storage=storage)


STORAGES = ["journal", "sqlite", pytest.param("postgresql", marks=needs_postgres)]


@pytest.mark.parametrize("kind", STORAGES)
def test_the_storage_clock_is_not_this_machines(tmp_path, monkeypatch, kind):
    storage = storage_of(kind, tmp_path)
    running_trial(storage)
    truth = time.time()
    skew_clock(monkeypatch, TEN_MINUTES)
    assert abs(leases.storage_now(storage) - truth) < 5  # same machine here: the storage's clock is the true one


@pytest.mark.parametrize("skew", [TEN_MINUTES, -TEN_MINUTES])
@pytest.mark.parametrize("kind", STORAGES)
def test_a_judge_whose_clock_is_off_neither_loses_a_live_trial_nor_keeps_a_dead_one(tmp_path, monkeypatch, kind, skew):
    storage = storage_of(kind, tmp_path)
    study, trial_id = running_trial(storage)
    # a live worker on another host wrote its lease a moment ago; the judge's clock is 10 minutes off
    held = {**leases.lease(storage), "host": "worker-host", "pid": 4242}
    storage.set_trial_system_attr(trial_id, leases.LEASE, held)
    skew_clock(monkeypatch, skew)
    other = judge(tmp_path, storage, study)
    assert other.requeue_abandoned() == []
    assert storage.get_trial(trial_id).state == TrialState.RUNNING

    # that worker died 400 s ago (its last heartbeat, on the storage's clock)
    storage.set_trial_system_attr(trial_id, leases.LEASE, {**held, "beat": leases.storage_now(storage) - 400})
    assert other.requeue_abandoned() == [0]
    failed = storage.get_trial(trial_id)
    assert failed.state == TrialState.FAIL and "worker-host pid 4242" in failed.user_attrs["error"]
    assert "no heartbeat for 40" in failed.user_attrs["error"]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # queued again


def test_a_worker_whose_clock_is_off_writes_heartbeats_the_judge_reads_right(tmp_path, monkeypatch):
    storage = storage_of("sqlite", tmp_path)
    _, trial_id = running_trial(storage)
    skew_clock(monkeypatch, -TEN_MINUTES)  # the worker's clock is behind: its beats must not look old
    assert leases.write_lease(storage, trial_id, "trial-000")
    held = {**storage.get_trial(trial_id).system_attrs[leases.LEASE], "host": "worker-host"}
    monkeypatch.undo()
    assert leases.why_abandoned(held, leases.storage_now(storage)) is None


def test_a_trial_left_without_a_lease_is_requeued_after_a_grace(tmp_path, monkeypatch):
    storage = storage_of("journal", tmp_path)
    study, trial_id = running_trial(storage)  # taken, then its worker killed before it wrote a lease
    monkeypatch.setattr(sweep, "UNLEASED_GRACE_S", 0.1)
    assert judge(tmp_path, storage, study).requeue_abandoned() == [0]
    assert "before writing its lease" in storage.get_trial(trial_id).user_attrs["error"]


class FlakyStorage:
    """A storage whose lease writes fail `failures` times (a dropped database connection), then work."""

    def __init__(self, storage, failures: int):
        self.storage, self.failures, self.tries = storage, failures, 0

    def set_trial_system_attr(self, trial_id, key, value):
        self.tries += 1
        if self.tries <= self.failures:
            raise ConnectionError("server closed the connection unexpectedly")
        self.storage.set_trial_system_attr(trial_id, key, value)

    def __getattr__(self, name):
        return getattr(self.storage, name)


def test_the_heartbeat_outlives_a_storage_that_fails_for_a_while(tmp_path, monkeypatch):
    storage = storage_of("journal", tmp_path)
    _, trial_id = running_trial(storage)
    monkeypatch.setattr(leases, "HEARTBEAT_S", 0.05)
    flaky, said = FlakyStorage(storage, failures=3), []
    with leases.Heartbeat(flaky, trial_id, "trial-000", said.append) as heartbeat:
        deadline = time.time() + 30
        while flaky.tries < 6:  # three failures, then beats again
            assert time.time() < deadline, said
            time.sleep(0.02)
        assert heartbeat.thread.is_alive() and not heartbeat.taken.is_set()
    assert leases.LEASE in storage.get_trial(trial_id).system_attrs
    assert said[0].startswith("trial-000: cannot write its lease (ConnectionError: server closed")
    assert "lease written again after 3 failed tries" in said[1]


def test_the_heartbeat_of_a_trial_finished_by_another_worker_says_taken(tmp_path, monkeypatch):
    storage = storage_of("journal", tmp_path)
    _, trial_id = running_trial(storage)
    monkeypatch.setattr(leases, "HEARTBEAT_S", 0.05)
    with leases.Heartbeat(storage, trial_id, "trial-000", print) as heartbeat:
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        assert heartbeat.taken.wait(30)


@pytest.mark.parametrize("when", ["at an evaluation", "after its last evaluation"])
def test_a_worker_whose_trial_is_taken_logs_it_and_goes_on(tmp_path, tiny_bert, stance_data, monkeypatch, when):
    """Row 7 of issue 26: a live worker's lease looks stale to another worker (another host, its
    heartbeat 400 s old), which fails the trial and queues it again."""
    path = tiny_experiment(tmp_path, tiny_bert, extra=GRID.replace("[2, 4]", "[2]").replace("[1e-3, 5e-3]", "[1e-3]"))
    path.write_text(path.read_text().replace("num_train_epochs = 3", "num_train_epochs = 2"))
    out = tmp_path / "sweep"
    taken = []

    def another_worker_judges(on: sweep.Sweep) -> None:
        storage = on.storage()
        study_id = storage.get_study_id_from_name(on.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
        stale = {**storage.get_trial(trial_id).system_attrs[leases.LEASE], "host": "other-host",
                 "beat": leases.storage_now(storage) - 400}
        storage.set_trial_system_attr(trial_id, leases.LEASE, stale)
        taken.extend(sweep.Sweep(on.directory, on.experiment, on.study_name, on.url).requeue_abandoned())

    if when == "at an evaluation":
        evaluate = sweep.ReportToTrial.on_evaluate

        def judged_first(self, run, metrics):
            if self.trial.number == 0 and self.evaluations == 0:  # the first of two
                another_worker_judges(current[0])
            evaluate(self, run, metrics)

        monkeypatch.setattr(sweep.ReportToTrial, "on_evaluate", judged_first)
    else:
        tell = sweep.Sweep.tell

        def judged_first(self, trial, *args, **kwargs):
            if trial.number == 0:
                another_worker_judges(self)
            return tell(self, trial, *args, **kwargs)

        monkeypatch.setattr(sweep.Sweep, "tell", judged_first)
    current, said = [], []
    work = sweep.work
    monkeypatch.setattr("stancerun.studies.sweep_workers.work",
                        lambda s, *a, **k: current.append(s) or work(s, *a, **{**k, "say": said.append}))

    run_sweep(load_experiment(path), output_dir=str(out))  # no UpdateFinishedTrialError
    assert taken == [0]
    assert any(line.startswith("trial-000") and "taken from this worker" in line for line in said), said
    rows = {r["number"]: r for r in trials(out)["rows"]}
    assert rows[0]["state"] == "failed" and "other-host" in rows[0]["note"] and rows[0]["requeued"]
    assert rows[1]["state"] == "complete" and rows[1]["retry_of"] == 0  # the same worker went on and ran it
    assert (out / "report.md").is_file()
    if when == "at an evaluation":  # stopped there, not trained to the end for nothing
        status = (out / "trial-000" / "status.json").read_text()
        assert '"taken"' in status and not (out / "trial-000" / "results.json").exists()
