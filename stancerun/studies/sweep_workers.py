"""Running a sweep: create it and work on it in this process or in worker processes
(`stancerun run SWEEP.toml [--workers N]`), join one (`stancerun sweep join`), resume one, and
write its report once no trial is left (the last worker to stop does)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from stancerun.config.experiment import Experiment
from stancerun.errors import UsageError
from stancerun.rundir import artifacts
from stancerun.rundir.layout import RunDir
from stancerun.rundir.redact import STORAGE_URL_ENV, public_url
from stancerun.studies.sweep import Sweep, create, is_main_process, open_sweep, shared, work


def run_sweep(experiment: Experiment, output_dir: str | None = None, workers: int = 1, storage: str | None = None,
              registry=None) -> Path:
    """Create the sweep and run it: in this process, or in ``workers`` worker processes."""
    if workers > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--workers starts worker processes of its own; under `accelerate launch` each trial "
                         "already runs on every process: use one or the other")
    main = is_main_process()
    directory = shared(str(create(experiment, output_dir, storage).directory) if main else None)
    # The URL with its password (the experiment's [sweep] storage too): the sweep directory keeps its public form.
    storage = storage or experiment.config["sweep"].get("storage")
    sweep = open_sweep(directory, storage=storage)
    if workers > 1:
        spawn(sweep, workers)
    else:
        work(sweep, registry)
    if main:
        finish(sweep, registry)
    return sweep.directory


def join_sweep(target: str, storage: str | None = None, study_name: str | None = None, output_dir: str | None = None,
               quiet: bool = False, registry=None) -> Path:
    """Add this machine (this process) as a worker to a sweep that exists."""
    sweep = open_sweep(target, storage, study_name, output_dir)
    tag = f"[{socket.gethostname()} pid {os.getpid()}] "
    work(sweep, registry, quiet=quiet, say=lambda text: print(tag + text, flush=True))
    if is_main_process():
        finish(sweep, registry, print_board=not quiet)
    return sweep.directory


def resume_sweep(directory: Path, storage: str | None = None, registry=None, trust_remote_code: bool = False) -> Path:
    """Continue an interrupted sweep: trials of dead workers run again, queued ones run; a
    finished sweep is left as it is. A config that lets the model run code from its folder needs
    ``trust_remote_code``, as `resume RUN_DIR` does."""
    sweep = open_sweep(str(directory), storage)
    asking = artifacts.asking_for_remote_code(sweep.experiment.config)
    if asking and not trust_remote_code:
        raise UsageError(f"{RunDir(sweep.directory).config}: [{', '.join(asking)}] trust_remote_code asks to run code "
                         "from the model's folder; add --trust-remote-code to allow it if you trust where it came from")
    requeued = sweep.requeue_abandoned() if is_main_process() else []
    ran = work(sweep, registry)
    if is_main_process():
        if not ran and not requeued and RunDir(sweep.directory).report.is_file():
            print(f"{sweep.directory}: every trial has finished; nothing to do")
        else:
            finish(sweep, registry)
    return sweep.directory


def finish(sweep: Sweep, registry=None, print_board: bool = True) -> None:
    """The report, once no trial is queued or running (the last worker to stop writes it)."""
    from optuna.trial import TrialState

    from stancerun.studies.sweep_report import write_report

    left = sweep.study().get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if left:
        print(f"{len(left)} trial(s) still queued or running on other workers; the last worker writes the report")
        return
    summary = write_report(sweep, registry, print_board)
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items())
    print(f"sweep {sweep.study_name}: {summary['trials']} trials ({states}), {summary['steps']} training steps")
    if summary["best"]:
        print(f"best: {summary['best']['run']} ({summary['metric']} {summary['best']['value']:.4f}); "
              f"run it again: stancerun {RunDir(sweep.directory).best}")
    print(f"sweep directory: {sweep.directory}")


def worker_command(sweep: Sweep) -> tuple[list[str], dict[str, str]]:
    """A worker's argv and the environment entries it adds: the storage URL's password goes in the
    environment (readable by its owner only), never in argv (readable by anyone, through ps)."""
    import sys

    command = [sys.executable, "-m", "stancerun", "sweep", "join", str(sweep.directory), "--quiet"]
    if sweep.url is None:
        return command, {}
    return command + ["--storage", public_url(sweep.url)], {STORAGE_URL_ENV: sweep.url}


def spawn(sweep: Sweep, workers: int) -> None:
    """``workers`` processes of `stancerun sweep join`, each with its share of the CPU threads (and
    its own GPU when there are enough); waits for all of them."""
    import signal
    import subprocess

    gpus = _gpu_count()
    command, secret = worker_command(sweep)
    processes = []
    for i in range(workers):
        env = {**os.environ, **secret}
        # Two workers each using every core run many times slower than one each (contention).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        processes.append(subprocess.Popen(command, env=env))
    print(f"{workers} workers started on sweep {sweep.study_name} (process ids "
          f"{', '.join(str(p.pid) for p in processes)}); more can join from other machines: "
          f"stancerun sweep join {sweep.directory if sweep.url is None else public_url(sweep.url)}")

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # each saves its checkpoint; its trial is queued again
        for p in processes:
            p.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [f"pid {p.pid}: exit {code}" for p, code in zip(processes, codes) if code]
    if failed:
        print(f"warning: {len(failed)} of {workers} workers stopped with an error ({'; '.join(failed)}); "
              f"`stancerun resume {sweep.directory}` runs what they left")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0
