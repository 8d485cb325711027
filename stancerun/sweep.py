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

import copy
import dataclasses
import itertools
import json
import random
import shutil
from pathlib import Path

from stancerun import artifacts, checkpoint
from stancerun.config import Experiment
from stancerun.errors import UsageError

PLAN = "sweep.json"
SETTINGS = {"mode", "trials", "seed"}


def settings(table: dict) -> tuple[str, int, int, dict[str, list]]:
    """(mode, trials, seed, {dotted key: values}) of a validated [sweep] table."""
    params = {k: v for k, v in table.items() if k not in SETTINGS}
    return table.get("mode", "grid"), table.get("trials", 0), table.get("seed", 0), params


def combinations(table: dict) -> list[dict]:
    mode, trials, seed, params = settings(table)
    grid = [dict(zip(params, values)) for values in itertools.product(*params.values())]
    if mode == "random":
        grid = random.Random(seed).sample(grid, min(trials, len(grid)))
    return grid


def set_dotted(config: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    target = config
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def child_experiments(experiment: Experiment, registry) -> list[tuple[str, dict, Experiment]]:
    """One validated experiment per combination; every problem of every combination at once."""
    from stancerun.config import Origins, validate
    from stancerun.errors import ConfigError

    children, problems = [], []
    for i, params in enumerate(combinations(experiment.config["sweep"]), 1):
        name = f"run-{i:02d}"
        config = copy.deepcopy(experiment.config)
        del config["sweep"]
        config["name"] = f"{experiment.name}-{name}"
        for key, value in params.items():
            set_dotted(config, key, value)
        try:
            children.append((name, params, validate(config, Origins(), experiment.path, registry)))
        except ConfigError as error:
            problems += [dataclasses.replace(p, key=f"sweep {name} {p.key}") for p in error.problems]
    if problems:
        raise ConfigError(problems, str(experiment.path))
    return children


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
