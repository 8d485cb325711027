"""Sweeps on Optuna: a `[sweep]` table becomes an Optuna study whose trials are ordinary runs,
each in its own directory (``trial-000``, ...) inside the sweep directory.

One study, any number of workers. Every trial the sweep will run is put in the study's queue
when it is created (the grid's points with their values; for random and TPE, empty slots the
sampler fills when a worker takes them), and a worker takes a queued trial by moving it from
WAITING to RUNNING, which the storage grants to exactly one worker. So the total is exactly
as asked and each grid point runs once, however many workers join (Optuna's GridSampler may
repeat a point under concurrency, and counting trials before asking races).

A worker writes a lease on its running trial (host, process, a heartbeat every 30 s). A trial
whose worker is gone (the process no longer exists on this host; no heartbeat for 5 minutes
from another host) is marked failed by the next worker, or `stancerun resume SWEEP_DIR`, and
queued again with its values. (Optuna's own heartbeat exists only for RDB storages and inside
``Study.optimize``, which cannot share a decision across Accelerate processes.)

Under `accelerate launch` the main process talks to the study; the trial's values and each
pruning decision are broadcast, so every process runs the same trial and stops at the same step.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.rundir.layout import JOURNAL, SWEEP_PLAN, RunDir
from stancerun.rundir.redact import public_url, with_password
from stancerun.config import sweepplan
from stancerun.config import tomlio
from stancerun.config.experiment import Experiment, Origins, validate
from stancerun.errors import RunPruned, UsageError

LEASE = "stancerun:lease"
HEARTBEAT_S = 30
STALE_AFTER_S = 300


def objective(config: dict) -> tuple[str, bool]:
    """(metric, greater is better): the headline metric, else the model-selection metric; a
    trial's value is its validation score on it, and its curve is what the pruner sees."""
    from stancerun.evaluation.analysis import greater_is_better

    metric = (config["evaluation"].get("headline") or config["training"]["metric_for_best_model"]).removeprefix("eval_")
    greater = config["training"].get("greater_is_better")
    return metric, greater_is_better(metric) if greater is None else greater


def open_storage(url: str | None, directory: Path):
    """The study's storage: a journal file in the sweep directory, or the database at ``url``."""
    import optuna

    if url is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(directory / JOURNAL)))
    try:
        # With the cache Optuna puts in front of a database for its own studies: the trial ids this
        # module reads and the Trial objects it makes must go through one storage object.
        return optuna.storages.get_storage(optuna.storages.RDBStorage(url))
    except ImportError as error:
        raise UsageError(f"sweep storage {public_url(url)}: its database driver is not installed ({error}); "
                         "for PostgreSQL: pip install 'stancerun[postgres]'") from None
    except Exception as error:  # sqlalchemy's OperationalError, ArgumentError, ...
        raise UsageError(f"sweep storage {public_url(url)}: cannot open it: {str(error).splitlines()[0]}") from None


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class Sweep:
    """One study: where its trials' run directories go, what they run, and how it samples."""

    directory: Path
    experiment: Experiment
    study_name: str
    url: str | None  # None: the journal file in ``directory``
    _storage: object = field(default=None, repr=False)  # opened on first use

    @property
    def table(self) -> dict:
        return self.experiment.config["sweep"]

    def storage(self):
        if self._storage is None:
            self._storage = open_storage(self.url, self.directory)
        return self._storage

    def study(self, seed_offset: int = 0):
        """The study with a fresh trial cache; the sampler seeded per trial, so each trial's
        values are reproducible whichever worker takes it."""
        import optuna

        s = sweepplan.settings(self.table)
        seed = s["seed"] + seed_offset
        if s["sampler"] == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=s["startup_trials"], constant_liar=True)
        else:  # grid trials arrive with their values; random draws the rest
            sampler = optuna.samplers.RandomSampler(seed=seed)
        # A trial reports at evaluation 0, 1, 2, ...: comparable across trials whatever their batch size.
        pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=s["startup_trials"],
                                                                n_warmup_steps=s["pruner_warmup"]),
                  "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=max(1, s["pruner_warmup"])),
                  "none": optuna.pruners.NopPruner}[s["pruner"]]()
        return optuna.load_study(study_name=self.study_name, storage=self.storage(), sampler=sampler, pruner=pruner)

    # -- taking a trial -----------------------------------------------------------------
    def claim(self):
        """Take the next queued trial (after failing and requeueing those of dead workers):
        (optuna Trial, its storage id, params), or None when the queue is empty."""
        import optuna
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.storage()
        study_id = storage.get_study_id_from_name(self.study_name)
        self.requeue_abandoned()
        for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            try:
                if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    continue  # another worker took it first
            except UpdateFinishedTrialError:
                continue
            storage.set_trial_system_attr(trial_id, LEASE, lease())
            trial = optuna.trial.Trial(self.study(seed_offset=frozen.number), trial_id)
            return trial, trial_id, suggest(trial, self.table)
        return None

    def requeue_abandoned(self) -> list[int]:
        """Fail every running trial whose worker is gone and queue its values again; the numbers."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.storage()
        study_id = storage.get_study_id_from_name(self.study_name)
        requeued = []
        for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            held = frozen.system_attrs.get(LEASE)
            started = frozen.datetime_start.timestamp() if frozen.datetime_start else time.time()
            if worker_alive(held, started):
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            who = f"{held['host']} pid {held['pid']}" if held else "unknown"
            try:  # a finished trial takes no attributes: these first
                storage.set_trial_user_attr(trial_id, "error", f"its worker ({who}) stopped without finishing it")
                storage.set_trial_user_attr(trial_id, "requeued", True)
                storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another worker failed it first (and queued it again)
            self.study().enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
            requeued.append(frozen.number)
        return requeued


def suggest(trial, table: dict) -> dict:
    """The trial's value for every swept key (a queued grid point's are fixed)."""
    params = {}
    for key, spec in sweepplan.parameters(table).items():
        if not sweepplan.is_range(spec):
            params[key] = sweepplan.decode(trial.suggest_categorical(key, [sweepplan.encode(v) for v in spec]), spec)
        elif sweepplan.range_kind(spec) == "int":
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step") or 1,
                                            log=spec.get("log", False))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec.get("step"),
                                              log=spec.get("log", False))
    return params


# -- leases ------------------------------------------------------------------------------
def process_start(pid: int) -> str | None:
    """When a process started (Linux), so a reused process id is not taken for the worker."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lease() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()), "beat": time.time()}


def worker_alive(held: dict | None, started: float) -> bool:
    if held is None:  # taken but killed before its lease was written
        return time.time() - started < STALE_AFTER_S
    if held["host"] == socket.gethostname():
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        return held.get("start") is None or process_start(held["pid"]) in (None, held["start"])
    return time.time() - held["beat"] < STALE_AFTER_S


class Heartbeat:
    """Renews the lease on a running trial every HEARTBEAT_S seconds, in a daemon thread."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.storage.set_trial_system_attr(self.trial_id, LEASE, lease())
            except Exception:  # a finished trial, a dropped connection: the next claim decides
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


# -- pruning -----------------------------------------------------------------------------
def is_main_process() -> bool:
    """Rank 0 under `accelerate launch` (or the only process): the one that talks to the study."""
    return int(os.environ.get("RANK", "0")) == 0


def shared(value):
    """``value`` as the main process has it, on every process (Accelerate's broadcast)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return value
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # as runner.make_accelerator sets it up
    return broadcast_object_list([value])[0]


class ReportToTrial:
    """A callback: after each evaluation the main process reports the objective to the trial (at
    the evaluation's number) and asks the pruner; the decision is broadcast, so every process
    stops at the same step."""

    def __init__(self, trial, metric: str, pruner: str):
        self.trial, self.metric, self.pruner, self.steps, self.evaluations = trial, metric, pruner, 0, 0

    def on_log(self, run, logs) -> None:
        self.steps = run.global_step

    def on_evaluate(self, run, metrics) -> None:
        self.steps = run.global_step
        prune = False
        if self.trial is not None:  # the main process
            self.trial.report(metrics[self.metric], step=self.evaluations)
            prune = self.trial.should_prune()
        self.evaluations += 1
        if shared(prune):
            why = {"median": "worse than the median of the earlier trials at this evaluation",
                   "hyperband": "not among the best of its Hyperband rung"}.get(self.pruner, "pruned")
            raise RunPruned(f"pruned at step {run.global_step}: {self.metric} {metrics[self.metric]:.4f}, {why}")


# -- creating, opening, working ------------------------------------------------------------
def create(experiment: Experiment, output_dir: str | None = None, storage: str | None = None) -> Sweep:
    """A new sweep directory and its study, with every trial queued. sweep.json is written last:
    a worker that finds it finds the queue full."""
    import shutil

    quiet_optuna()
    url = storage or experiment.config["sweep"].get("storage")
    directory = artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir)
    sweep = Sweep(directory, experiment, directory.name, url)
    try:
        study = new_study(sweep)
        table = experiment.config["sweep"]
        if sweepplan.settings(table)["sampler"] == "grid":
            for point in sweepplan.grid(table):
                study.enqueue_trial({k: sweepplan.encode(v) for k, v in point.items()})
        else:
            for _ in range(sweepplan.settings(table)["trials"]):
                study.enqueue_trial({})  # the sampler fills the values when a worker takes it
        saved = tomlio.loads(experiment.to_toml())
        if url is not None:
            saved["sweep"]["storage"] = public_url(url)  # no password on disk (workers: STANCERUN_STORAGE_URL)
        plan = {"study": sweep.study_name, "storage": None if url is None else public_url(url),
                "experiment": str(experiment.path), "created": datetime.now().isoformat(timespec="seconds")}
        # Everything a worker on another machine needs, in the study itself.
        for key, value in {**plan, "directory": str(directory), "config": tomlio.dumps(saved)}.items():
            study.set_user_attr(f"stancerun:{key}", value)
        artifacts.atomic_write(RunDir(directory).config, tomlio.dumps(saved))
        artifacts.write_json(RunDir(directory).sweep_plan, plan)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # nothing half-made left behind (a database it could not open)
        raise
    return sweep


def new_study(sweep: Sweep):
    import uuid

    import optuna

    _, greater = objective(sweep.experiment.config)
    direction = "maximize" if greater else "minimize"
    try:
        return optuna.create_study(storage=sweep.storage(), study_name=sweep.study_name, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:  # a database shared by many sweeps, and the same --output-dir again
        sweep.study_name = f"{sweep.directory.name}-{uuid.uuid4().hex[:6]}"
        return optuna.create_study(storage=sweep.storage(), study_name=sweep.study_name, direction=direction)


def open_sweep(target: str, storage: str | None = None, study_name: str | None = None,
               output_dir: str | None = None) -> Sweep:
    """The sweep in directory ``target``, or the study in the database at URL ``target``."""
    quiet_optuna()
    path = Path(target)
    if RunDir(path).kind == RunDir.SWEEP:
        plan = json.loads(RunDir(path).sweep_plan.read_text(encoding="utf-8"))
        config = tomlio.loads(RunDir(path).config.read_text(encoding="utf-8"))
        url = None if (storage or plan["storage"]) is None else with_password(storage or plan["storage"])
        return Sweep(path.resolve(), experiment_of(config, plan["experiment"]), plan["study"], url)
    if "://" not in target:
        raise UsageError(f"{target}: neither a sweep directory (no {SWEEP_PLAN} inside) nor a storage URL")
    import optuna

    target = with_password(target)

    summaries = optuna.get_all_study_summaries(open_storage(target, Path.cwd()))
    ours = [s for s in summaries if "stancerun:config" in s.user_attrs and study_name in (None, s.study_name)]
    if len(ours) != 1:
        names = ", ".join(s.study_name for s in summaries if "stancerun:config" in s.user_attrs) or "none"
        raise UsageError(f"{public_url(target)}: " + ("name the sweep with --study NAME; it holds: " if ours else
                                                      f"no stancerun sweep{' ' + study_name if study_name else ''} in it; "
                                                      "its sweeps: ") + names)
    attrs = ours[0].user_attrs
    directory = Path(output_dir) if output_dir else Path(attrs["stancerun:directory"])
    if not directory.is_dir():  # not a shared file system: this machine keeps its own trials' run directories
        directory = Path.cwd() / ours[0].study_name
    directory.mkdir(parents=True, exist_ok=True)
    config = tomlio.loads(attrs["stancerun:config"])
    return Sweep(directory.resolve(), experiment_of(config, attrs["stancerun:experiment"]), ours[0].study_name, target)


def experiment_of(config: dict, path: str) -> Experiment:
    from stancerun.registry.discovery import get_registry

    # The saved config is resolved (absolute data paths); validating it again rebuilds the
    # Experiment with its registry-checked tables.
    return validate(config, Origins(), Path(path), get_registry())


def work(sweep: Sweep, registry=None, quiet: bool = False, say=print) -> int:
    """Take and run queued trials until none is left; how many this worker ran."""
    from stancerun.registry.discovery import get_registry

    registry = registry or get_registry()
    main = is_main_process()
    metric, _ = objective(sweep.experiment.config)
    ran = 0
    while True:
        claim = sweep.claim() if main else None
        taken = shared(None if claim is None else (claim[0].number, claim[2]))
        if taken is None:
            return ran
        number, params = taken
        trial, trial_id = claim[:2] if main else (None, None)
        run_trial(sweep, trial, trial_id, number, params, metric, registry, quiet, say)
        ran += 1


def run_trial(sweep: Sweep, trial, trial_id: int | None, number: int, params: dict, metric: str, registry, quiet: bool,
              say) -> None:
    """One trial as one run, on every process; the main process (``trial`` is not None there)
    tells the study how it ended."""
    import contextlib

    from optuna.trial import TrialState

    from stancerun.engine.run import run_experiment

    name = f"trial-{number:03d}"
    main = trial is not None
    say = say if main else (lambda text: None)
    say(f"{name} ({sweepplan.shown(params)}): started")
    report = ReportToTrial(trial, metric, sweepplan.settings(sweep.table)["pruner"])
    started = time.perf_counter()

    def tell(state, value=None, **attrs) -> None:
        if not main:
            return
        for key, attr in {"run": name, "steps": report.steps, "runtime_s": round(time.perf_counter() - started, 3),
                          **attrs}.items():
            trial.set_user_attr(key, attr)
        trial.study.tell(trial, value, state=state)

    with Heartbeat(sweep.storage(), trial_id) if main else contextlib.nullcontext():
        try:
            child = validate(sweepplan.child_config(sweep.experiment.config, params, name), Origins(),
                             sweep.experiment.path, registry)
            run_dir = run_experiment(child, output_dir=str(sweep.directory / name), registry=registry, quiet=quiet,
                                     callbacks=[report])
            if main:
                results = RunDir(run_dir).read_results()
                steps, value = results.train.all_steps(), results.final[metric]
        except RunPruned as pruned:
            tell(TrialState.PRUNED, note=str(pruned))
            say(f"{name}: {pruned}")
            return
        except KeyboardInterrupt:
            tell(TrialState.FAIL, error="interrupted", requeued=True)
            if main:  # run again, from the start, by whoever continues the sweep
                trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": number})
            raise
        except Exception as error:
            tell(TrialState.FAIL, error=f"{type(error).__name__}: {error}")
            say(f"{name}: failed: {type(error).__name__}: {error}")
            return
    if main:
        tell(TrialState.COMPLETE, value, steps=steps)
        say(f"{name}: {metric} {value:.4f} after {steps} steps")
