"""`stancerun compare RUN_DIR...`: one leaderboard, with intervals, and which differences from
the leader are real (paired bootstrap on the shared validation split)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stancerun.rundir import artifacts
from stancerun.rundir.layout import RunDir
from stancerun.rundir.results import Results
from stancerun.evaluation import stats
from stancerun.errors import UsageError
from stancerun.contracts import EvalPrediction
from stancerun.config.schema import greater_is_better


@dataclass
class Run:
    path: Path
    config: dict
    results: Results
    texts: list[str]
    labels: np.ndarray
    logits: np.ndarray  # log-probabilities from predictions.csv (argmax and ranking preserved)
    label_names: list[str]
    model: str  # where the model came from, as its plugin reported it

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: Path) -> Run:
    found = RunDir(path)
    try:
        config = found.read_config()
        results = found.read_results()
        with found.predictions.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as error:
        status = artifacts.read_status(path) or {}
        if status.get("status") == "failed":
            raise UsageError(f"{path}: this run failed at step {status.get('step')}: {status.get('error')} "
                             f"(traceback in {found.status})") from None
        if status.get("status") in ("pruned", "taken"):  # errors.RunPruned, errors.TrialTaken
            raise UsageError(f"{path}: this run was stopped by its sweep ({status.get('error')}); "
                             "it has no final results") from None
        if status.get("status") in ("running", "interrupted"):
            raise UsageError(f"{path}: this run did not finish (status: {status['status']}, last known step "
                             f"{status.get('step', 'unknown')}); `stancerun resume {path}` continues it") from None
        raise UsageError(f"{path}: not a finished run directory ({Path(error.filename).name} is missing)") from None
    names = [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")] if rows else []
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    labels = np.array([names.index(r["label"]) for r in rows])
    return Run(path, config, results, [r["text"] for r in rows], labels, np.log(np.clip(probs, 1e-12, None)), names,
               short_source(results.model.source if results.model else ""))


def short_source(source: str) -> str:
    """A model's source for a table column: a local path's last two parts, a hub id as it is."""
    path = Path(source)
    return "/".join(path.parts[-2:]) if path.is_absolute() else source


def compare(paths: list[Path], registry=None) -> dict:
    from stancerun.components.assembly import combined_metrics
    from stancerun.config.experiment import build
    from stancerun.registry.discovery import get_registry

    if len(paths) < 1:
        raise UsageError("compare needs at least one run directory")
    runs = [load_run(p) for p in paths]
    # The first run's headline metric orders the table (its model-selection metric for older runs).
    first = runs[0].config
    metric = (first.get("evaluation", {}).get("headline") or first["training"]["metric_for_best_model"]).removeprefix("eval_")
    greater = first["training"].get("greater_is_better")
    if greater is None or metric != first["training"]["metric_for_best_model"].removeprefix("eval_"):
        greater = greater_is_better(metric)
    if any(metric not in r.results.final for r in runs):
        metric = "accuracy" if all("accuracy" in r.results.final for r in runs) else "loss"
        greater = metric != "loss"
    ranked = sorted(runs, key=lambda r: r.results.final[metric], reverse=greater)
    leader = ranked[0]
    registry = registry or get_registry()
    metric_fn = combined_metrics([build(registry, "metrics", t) for t in leader.config["metrics"]])
    evaluation = leader.config.get("evaluation", {})
    rows = []
    for run in ranked:
        row = {"run": run.name, "path": str(run.path), "model": run.model,
               "adapter": run.config["adapter"]["use"], "metric": metric, "value": run.results.final[metric],
               "interval": run.results.interval("final", metric),
               "train_runtime_s": run.results.train.runtime_s if run.results.train else None, "vs_leader": None}
        if run is not leader:
            row["vs_leader"] = paired(leader, run, metric_fn, metric, evaluation)
        rows.append(row)
    return {"metric": metric, "greater_is_better": greater, "leader": leader.name, "rows": rows}


def paired(leader: Run, run: Run, metric_fn, metric: str, evaluation: dict) -> dict | str:
    """The leader minus this run on the shared split, or why they cannot be paired."""
    if leader.texts != run.texts or not np.array_equal(leader.labels, run.labels) or leader.label_names != run.label_names:
        return "different validation split: not comparable example by example"
    if metric == "loss":
        return "loss is not resampled; compare on a metric"
    diff = stats.paired_bootstrap(EvalPrediction(leader.logits, leader.labels, leader.label_names),
                                  EvalPrediction(run.logits, run.labels, run.label_names), metric_fn,
                                  evaluation.get("bootstrap_resamples", 1000) or 1000, evaluation.get("bootstrap_seed", 0),
                                  evaluation.get("confidence", 0.95))
    return diff[metric]


def print_leaderboard(board: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from stancerun.reporting.report import with_interval

    table = Table(title=f"leaderboard by {board['metric']} (validation split)", title_justify="left")
    for col in ("#", "run", "model", "adapter", board["metric"], "vs leader", "train s"):
        table.add_column(col, justify="right" if col in ("#", board["metric"], "train s") else "left")
    for i, row in enumerate(board["rows"], 1):
        vs = row["vs_leader"]
        if vs is None:
            verdict = "leader"
        elif isinstance(vs, str):
            verdict = f"[dim]{vs}[/]"
        else:
            verdict = (f"[red]worse[/] (Δ {vs['difference']:+.3f}, p={vs['p']:.3f})" if vs["significant"]
                       else f"not significantly different (Δ {vs['difference']:+.3f}, p={vs['p']:.2f})")
        runtime = row["train_runtime_s"]
        table.add_row(str(i), row["run"], str(row["model"]), row["adapter"], with_interval(row["value"], row["interval"]),
                      verdict, f"{runtime:.0f}" if runtime is not None else "")
    Console().print(table)
