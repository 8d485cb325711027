"""Runs repeated to measure spread: K-fold cross-validation over the training data, or the
same run over several seeds. Each repeat is a full run with its own run directory inside
the parent; the parent holds summary.json and report.md (mean, std, 95% t-interval)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.rundir.layout import REPORT, RunDir
from stancerun.config.experiment import Experiment
from stancerun.data.rows import Examples, Splits, concat


def stratified_folds(labels: list[int], k: int, seed: int) -> list[list[int]]:
    """K disjoint folds covering every index once, each with (about) every label's share."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    if counts[counts > 0].min() < k:
        from stancerun.errors import UsageError

        raise UsageError(f"evaluation.cv_folds = {k}: the rarest label has only {counts[counts > 0].min()} training "
                         "example(s); use fewer folds")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [sorted(test.tolist()) for _, test in splitter.split(np.zeros(len(labels)), labels)]


def fold_splits(splits: Splits, k: int, seed: int) -> list[Splits]:
    """The training data (train plus a carved validation split) cut into K train/validation pairs;
    an explicit validation file is not part of the pool, a test split stays as it is."""
    pool: Examples = concat(splits.train, splits.validation) if splits.validation_from_split else splits.train
    folds = stratified_folds(pool.labels, k, seed)
    result = []
    for held_out in folds:
        held = set(held_out)
        train = pool.subset(i for i in range(len(pool)) if i not in held)
        result.append(Splits(train, pool.subset(held_out), splits.labels, splits.test, splits.files, False))
    return result


def with_changes(experiment: Experiment, **changes) -> Experiment:
    config = copy.deepcopy(experiment.config)
    config.update(changes)
    return dataclasses.replace(experiment, config=config)


def run_repeated(experiment: Experiment, output_dir: str | None = None, registry=None) -> Path:
    from rich.console import Console

    from stancerun.config.experiment import build
    from stancerun.registry.discovery import get_registry
    from stancerun.engine.run import run_experiment

    registry = registry or get_registry()
    ev = experiment.evaluation
    console = Console()
    parent = artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir)
    artifacts.atomic_write(RunDir(parent).config, experiment.to_toml())
    if ev.cv_folds:
        mode = "cv"
        dataset = build(registry, "datasets", experiment.config["data"])
        splits = dataset.load()
        # Folds shuffle with the dataset's own split seed (stancerun.contracts.Dataset), else the run's.
        split_seed = getattr(dataset, "split_seed", None)
        split_seed = experiment.config["seed"] if split_seed is None else split_seed
        plans = [(f"fold-{i + 1}", experiment, s) for i, s in enumerate(fold_splits(splits, ev.cv_folds, split_seed))]
    else:
        mode = "seeds"
        plans = [(f"seed-{seed}", with_changes(experiment, seed=seed), None) for seed in ev.seeds]

    runs = []
    for i, (label, child, splits) in enumerate(plans, 1):
        # Repeats keep the parent's evaluation settings but never repeat themselves.
        child = with_changes(child, name=f"{experiment.name}-{label}",
                             evaluation={**child.config["evaluation"], "cv_folds": 0, "seeds": []})
        console.print(f"[bold]{label}[/] ({i}/{len(plans)})")
        run_dir = run_experiment(child, output_dir=str(parent / label), registry=registry, splits=splits, quiet=True)
        results = RunDir(run_dir).read_results()
        runs.append({"name": label, "dir": label, "results": results})
        console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in results.final.items()))
    summary = summarise(mode, runs, ev.confidence)
    artifacts.write_json(RunDir(parent).summary, summary)
    artifacts.atomic_write(RunDir(parent).report, markdown(experiment, summary))
    print_summary(console, summary, parent)
    return parent


def summarise(mode: str, runs: list[dict], confidence: float) -> dict:
    from stancerun.evaluation.stats import aggregate

    summary = {"mode": mode, "runs": [r["dir"] for r in runs]}
    for section in ("final", "baseline", "test"):  # results.json's keys, as Results' fields
        present = [getattr(r["results"], section) for r in runs]
        if all(scores is not None for scores in present):
            summary[section] = {k: aggregate([p[k] for p in present], confidence) for k in present[0]}
    return summary


def markdown(experiment: Experiment, summary: dict) -> str:
    what = {"cv": f"{len(summary['runs'])}-fold cross-validation", "seeds": f"{len(summary['runs'])} seeds"}[summary["mode"]]
    lines = [f"# {experiment.name}: {what}", "",
             "Each repeat is a full run in its own directory; figures are the mean, the sample standard deviation "
             "and a 95% t-interval of the mean over the repeats.", ""]
    for section, title in (("final", "Validation (fine-tuned)"), ("baseline", "Validation (untrained)"), ("test", "Test")):
        if section in summary:
            lines += [f"## {title}", "", "| metric | mean | std | 95% interval | per repeat |", "|---|---:|---:|---|---|"]
            for key, agg in summary[section].items():
                lines.append(f"| {key} | {agg['mean']:.4f} | {agg['std']:.4f} | [{agg['low']:.4f}, {agg['high']:.4f}] | "
                             + ", ".join(f"{v:.3f}" for v in agg["values"]) + " |")
            lines.append("")
    lines += ["Runs: " + ", ".join(f"[{d}]({d}/{REPORT})" for d in summary["runs"]), ""]
    return "\n".join(lines)


def print_summary(console, summary: dict, parent: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['mode']}: {len(summary['runs'])} runs (validation, fine-tuned)", title_justify="left")
    for col in ("metric", "mean", "std", "95% interval"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, agg in summary["final"].items():
        table.add_row(key, f"{agg['mean']:.4f}", f"{agg['std']:.4f}", f"[{agg['low']:.4f}, {agg['high']:.4f}]")
    console.print(table)
    console.print(f"[bold green]run directory:[/] {parent}")
