"""Sweeps: a `[sweep]` table runs an experiment once per combination of values, each as its
own run inside one sweep directory, and ends with `stancerun compare`'s leaderboard.

    [sweep]
    "adapter.r" = [4, 8, 16]
    "training.learning_rate" = [1e-4, 2e-4]
    mode = "grid"          # or "random", with trials = N
    seed = 0

The plan is written first (sweep.json); a sweep that is interrupted continues, with
`stancerun resume SWEEP_DIR`, from the first run that has not finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stancerun import artifacts, checkpoint
from stancerun.config import Experiment, child_experiments
from stancerun.errors import UsageError
from stancerun.sweepplan import combinations, set_dotted, settings  # noqa: F401 - the sweep's public names, as before

PLAN = "sweep.json"


def run_sweep(experiment: Experiment, output_dir: str | None = None, registry=None, sweep_dir: Path | None = None) -> Path:
    from rich.console import Console

    from stancerun.compare import compare, print_leaderboard
    from stancerun.plugins import get_registry
    from stancerun.runner import resume_run, run_experiment

    registry = registry or get_registry()
    console = Console()
    children = child_experiments(experiment, registry)
    if sweep_dir is None:
        sweep_dir = artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir)
        artifacts.atomic_write(sweep_dir / "config.toml", experiment.to_toml())
        artifacts.write_json(sweep_dir / PLAN, {"runs": [{"name": n, "params": p} for n, p, _ in children]})
    for i, (name, params, child) in enumerate(children, 1):
        run_dir = sweep_dir / name
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        if (run_dir / "results.json").is_file():
            console.print(f"[dim]{name} ({i}/{len(children)}) {shown}: done before[/]")
            continue
        console.rule(f"[bold]{name}[/] ({i}/{len(children)}) {shown}")
        if run_dir.exists() and checkpoint.latest(run_dir) is not None:
            resume_run(run_dir, registry=registry)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: start it again
            run_experiment(child, output_dir=str(run_dir), registry=registry)
    board = compare([sweep_dir / name for name, _, _ in children], registry=registry)
    for row in board["rows"]:
        row["params"] = next(p for n, p, _ in children if n == row["run"])
    artifacts.write_json(sweep_dir / "leaderboard.json", board)
    print_leaderboard(board)
    console.print(f"[bold green]sweep directory:[/] {sweep_dir}")
    return sweep_dir


def resume_sweep(sweep_dir: Path, registry=None) -> Path:
    from stancerun import tomlio
    from stancerun.plugins import get_registry

    registry = registry or get_registry()
    plan = json.loads((sweep_dir / PLAN).read_text(encoding="utf-8"))
    experiment = Experiment(sweep_dir / "config.toml", tomlio.loads((sweep_dir / "config.toml").read_text(encoding="utf-8")))
    planned = [r["name"] for r in plan["runs"]]
    if planned != [name for name, _, _ in child_experiments(experiment, registry)]:
        raise UsageError(f"{sweep_dir}: the sweep plan no longer matches its config.toml")
    return run_sweep(experiment, registry=registry, sweep_dir=sweep_dir)
