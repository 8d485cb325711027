"""Sweeps on Optuna: a `[sweep]` table becomes an Optuna study whose trials are ordinary runs,
each in its own directory (``trial-000``, ...) inside the sweep directory.

One study, any number of workers. Every trial the sweep will run is put in the study's queue
when it is created (the grid's points with their values; for random and TPE, empty slots the
sampler fills when a worker takes them), and a worker takes a queued trial by moving it from
WAITING to RUNNING, which the storage grants to exactly one worker. So the total is exactly
as asked and each grid point runs once, however many workers join (Optuna's GridSampler may
repeat a point under concurrency, and counting trials before asking races).

A worker writes a lease on its running trial (leases.py: host, process, a heartbeat every 30 s
on the storage's clock). A trial whose worker is gone (the process no longer exists on this host;
no heartbeat for 5 minutes from another host) is marked failed by the next worker, or `stancerun
resume SWEEP_DIR`, and queued again with its values; a worker that finds its trial taken from
it that way stops the run and goes on with the next trial. (Optuna's own heartbeat exists only
for RDB storages and inside ``Study.optimize``, which cannot share a decision across Accelerate
processes.)

Under `accelerate launch` the main process talks to the study; the trial's values and each
pruning decision are broadcast, so every process runs the same trial and stops at the same step.
"""

from __future__ import annotations

import json
import os
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
from stancerun.errors import RunPruned, TrialTaken, UsageError
from stancerun.studies.leases import LEASE, STALE_AFTER_S, UNLEASED_GRACE_S, Heartbeat, storage_now, why_abandoned, write_lease


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
            if not write_lease(storage, trial_id, f"trial-{frozen.number:03d}", give_up_after=STALE_AFTER_S):
                continue  # judged orphaned while the storage failed: queued again
            trial = optuna.trial.Trial(self.study(seed_offset=frozen.number), trial_id)
            return trial, trial_id, suggest(trial, self.table)
        return None

    def tell(self, trial, trial_id: int, name: str, state, value, say, **attrs) -> bool:
        """Record how a trial ended (its attributes, then its state); False when it was taken from
        this worker meanwhile (another judged it gone, failed it and queued it again)."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for key, attr in attrs.items():
                trial.set_user_attr(key, attr)
            trial.study.tell(trial, value, state=state)
        except (UpdateFinishedTrialError, ValueError):  # ValueError: Optuna's "Cannot tell a FAIL trial"
            if not self.storage().get_trial(trial_id).state.is_finished():
                raise
            say(f"{name}: taken from this worker (another judged it gone and queued it again); "
                "its result is not recorded; going on with the next trial")
            return False
        return True

    def requeue_abandoned(self) -> list[int]:
        """Fail every running trial whose worker is gone and queue its values again; the numbers."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        storage = self.storage()
        study_id = storage.get_study_id_from_name(self.study_name)
        running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        unleased = {t.number for t in running if LEASE not in t.system_attrs}
        if unleased:  # a worker between taking a trial and leasing it, or killed there: look again in a moment
            time.sleep(UNLEASED_GRACE_S)
            running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        now = storage_now(storage)
        requeued = []
        for frozen in running:
            held = frozen.system_attrs.get(LEASE)
            why = why_abandoned(held, now)
            if why is None or held is None and frozen.number not in unleased:
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            try:  # a finished trial takes no attributes: these first
                storage.set_trial_user_attr(trial_id, "error", why)
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
    stops at the same step. A trial taken from this worker (``taken``, set by its heartbeat, or a
    report refused) stops the same way."""

    def __init__(self, trial, metric: str, pruner: str, taken=None):
        self.trial, self.metric, self.pruner, self.taken = trial, metric, pruner, taken
        self.steps = self.evaluations = 0

    def on_log(self, run, logs) -> None:
        self.steps = run.global_step

    def on_evaluate(self, run, metrics) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        self.steps = run.global_step
        prune = taken = False
        if self.trial is not None:  # the main process
            try:
                self.trial.report(metrics[self.metric], step=self.evaluations)
                prune = self.trial.should_prune()
            except UpdateFinishedTrialError:
                taken = True
            taken = taken or self.taken is not None and self.taken.is_set()
        self.evaluations += 1
        prune, taken = shared((prune, taken))
        if taken:
            raise TrialTaken(f"stopped at step {run.global_step}: taken from this worker (another judged it gone, "
                             "failed the trial and queued it again)")
        if prune:
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
    heartbeat = Heartbeat(sweep.storage(), trial_id, name, say) if main else contextlib.nullcontext()
    report = ReportToTrial(trial, metric, sweepplan.settings(sweep.table)["pruner"],
                           heartbeat.taken if main else None)
    started = time.perf_counter()

    def tell(state, value=None, **attrs) -> bool:
        return not main or sweep.tell(trial, trial_id, name, state, value, say, **{
            "run": name, "steps": report.steps, "runtime_s": round(time.perf_counter() - started, 3), **attrs})

    with heartbeat:
        try:
            child = validate(sweepplan.child_config(sweep.experiment.config, params, name), Origins(),
                             sweep.experiment.path, registry)
            run_dir = run_experiment(child, output_dir=str(sweep.directory / name), registry=registry, quiet=quiet,
                                     callbacks=[report])
            if main:
                results = RunDir(run_dir).read_results()
                steps, value = results.train.all_steps(), results.final[metric]
        except RunPruned as pruned:
            if tell(TrialState.PRUNED, note=str(pruned)):
                say(f"{name}: {pruned}")
            return
        except TrialTaken as taken:
            say(f"{name}: {taken}; going on with the next trial")
            return
        except KeyboardInterrupt:
            if tell(TrialState.FAIL, error="interrupted", requeued=True) and main:
                # run again, from the start, by whoever continues the sweep
                trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": number})
            raise
        except Exception as error:
            if tell(TrialState.FAIL, error=f"{type(error).__name__}: {error}"):
                say(f"{name}: failed: {type(error).__name__}: {error}")
            return
    if main and tell(TrialState.COMPLETE, value, steps=steps):
        say(f"{name}: {metric} {value:.4f} after {steps} steps")
