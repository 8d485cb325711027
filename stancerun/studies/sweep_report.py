"""What a finished sweep leaves in its directory: trials.json (every trial of the study),
leaderboard.json (`stancerun compare` over the completed trials), best.toml (the best trial's
experiment, runnable as it is), history.png and importances.png, and report.md."""

from __future__ import annotations

import warnings
from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.rundir.layout import BEST, JOURNAL, RunDir
from stancerun.config import sweepplan
from stancerun.config.experiment import Origins, validate
from stancerun.rundir.redact import public_url
from stancerun.studies.sweep import Sweep, objective

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "queued"}


def trial_rows(sweep: Sweep, study) -> list[dict]:
    params = sweepplan.parameters(sweep.table)
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        values = {k: sweepplan.decode(v, params[k]) if not sweepplan.is_range(params[k]) else v for k, v in t.params.items()}
        rows.append({"number": t.number, "run": attrs.get("run", f"trial-{t.number:03d}"), "state": STATES[t.state.name],
                     "params": values, "value": t.value, "steps": attrs.get("steps"), "runtime_s": attrs.get("runtime_s"),
                     "note": attrs.get("note") or attrs.get("error"), "requeued": bool(attrs.get("requeued")),
                     "retry_of": attrs.get("retry_of")})
    return rows


def write_report(sweep: Sweep, registry=None, print_board: bool = True) -> dict:
    """Write every file of a sweep's report; the summary (what trials.json holds)."""
    from stancerun.registry.discovery import get_registry

    registry = registry or get_registry()
    study = sweep.study()
    rows = trial_rows(sweep, study)
    metric, greater = objective(sweep.experiment.config)
    complete = [r for r in rows if r["state"] == "complete"]
    settings = sweepplan.settings(sweep.table)
    summary = {"study": sweep.study_name, "storage": public_url(sweep.url) if sweep.url else JOURNAL,
               "sampler": settings["sampler"], "seed": settings["seed"], "pruner": settings["pruner"], "metric": metric,
               "direction": "maximize" if greater else "minimize",
               # Trials that count towards the total: a trial whose worker died was run again as another.
               "trials": len([r for r in rows if not r["requeued"] and r["state"] != "queued"]),
               "states": {s: sum(r["state"] == s for r in rows) for s in STATES.values() if any(r["state"] == s for r in rows)},
               "steps": sum(r["steps"] or 0 for r in rows), "best": None, "rows": rows}
    if complete:
        best = study.best_trial
        best_row = next(r for r in rows if r["number"] == best.number)
        summary["best"] = {"run": best_row["run"], "value": best.value, "params": best_row["params"]}
        write_best(sweep, best_row, metric, registry)
    artifacts.write_json(RunDir(sweep.directory).trials, summary)
    board = leaderboard(sweep, complete, registry)
    if board is not None:
        artifacts.write_json(RunDir(sweep.directory).leaderboard, board)
        if print_board:
            from stancerun.reporting.compare import print_leaderboard

            print_leaderboard(board)
    plots = write_plots(study, sweep.directory, len(complete))
    artifacts.atomic_write(RunDir(sweep.directory).report, markdown(sweep, summary, board, plots))
    return summary


def write_best(sweep: Sweep, row: dict, metric: str, registry) -> None:
    config = sweepplan.child_config(sweep.experiment.config, row["params"], "best")
    experiment = validate(config, Origins(), sweep.experiment.path, registry)
    header = (f"# The best trial of sweep {sweep.study_name} ({row['run']}: {metric} "
              f"{row['value']:.4f} on validation), resolved: `stancerun {RunDir(sweep.directory).best}` runs it again.\n")
    artifacts.atomic_write(RunDir(sweep.directory).best, header + experiment.to_toml())


def leaderboard(sweep: Sweep, complete: list[dict], registry) -> dict | None:
    from stancerun.reporting.compare import compare

    # On machines without a shared file system, each holds only its own trials' run directories.
    here = [r for r in complete if RunDir(sweep.directory / r["run"]).results.is_file()]
    if not here:
        return None
    board = compare([sweep.directory / r["run"] for r in here], registry=registry)
    params = {r["run"]: r["params"] for r in here}
    for row in board["rows"]:
        row["params"] = params[Path(row["path"]).name]
    return board


def write_plots(study, directory: Path, complete: int) -> list[str]:
    """Optuna's matplotlib plots of the optimization history and (from three completed trials:
    fewer tell nothing) the parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    plots = [("history.png", optuna_plots.plot_optimization_history)] if complete >= 1 else []
    if complete >= 3:
        plots.append(("importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            axes.figure.set_size_inches(7, 4)
            axes.figure.savefig(directory / name, dpi=110, bbox_inches="tight")  # the legend sits outside
            plt.close(axes.figure)
            written.append(name)
        except (ValueError, RuntimeError):  # importances need a parameter that varied among completed trials
            plt.close("all")
    return written


def shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(sweep: Sweep, summary: dict, board: dict | None, plots: list[str]) -> str:
    from stancerun.reporting.report import with_interval

    params = list(sweepplan.parameters(sweep.table))
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items())
    lines = [f"# Sweep {sweep.study_name}", "",
             f"{summary['trials']} trials ({states}), sampler `{summary['sampler']}`, pruner `{summary['pruner']}`; "
             f"objective: {summary['metric']} on the validation split ({summary['direction']}). Storage: "
             f"{summary['storage']}. Training steps, all trials: {summary['steps']}.", ""]
    if summary["best"]:
        best = summary["best"]
        values = ", ".join(f"{k}={shown(v)}" for k, v in best["params"].items())
        lines += [f"**Best:** {best['run']}, {summary['metric']} {best['value']:.4f} ({values}). "
                  f"Its experiment, runnable as it is: `{BEST}`.", ""]
    lines += ["## Trials", "", "| trial | state | " + " | ".join(params) + f" | {summary['metric']} | steps | seconds | note |",
              "|---|---|" + "---|" * len(params) + "---:|---:|---:|---|"]
    for r in summary["rows"]:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        note = (r["note"] or "") + (f"the retry of trial {r['retry_of']}" if r["retry_of"] is not None else "")
        cells = " | ".join(shown(r["params"].get(p, "")) for p in params)
        steps = "" if r["steps"] is None else r["steps"]
        seconds = "" if r["runtime_s"] is None else f"{r['runtime_s']:.0f}"
        lines.append(f"| {r['run']} | {r['state']} | {cells} | {value} | {steps} | {seconds} | {note} |")
    if board is not None:
        lines += ["", f"## Leaderboard (`stancerun compare` over the completed trials, {board['metric']} on validation)", "",
                  "| # | trial | " + " | ".join(params) + f" | {board['metric']} | vs leader |",
                  "|---:|---|" + "---|" * len(params) + "---:|---|"]
        for i, row in enumerate(board["rows"], 1):
            vs = row["vs_leader"]
            verdict = ("leader" if vs is None else vs if isinstance(vs, str) else
                       f"{'worse' if vs['significant'] else 'not significantly different'} "
                       f"(Δ {vs['difference']:+.3f}, p={vs['p']:.3f})")
            lines.append(f"| {i} | {Path(row['path']).name} | " + " | ".join(shown(row["params"].get(p, "")) for p in params)
                         + f" | {with_interval(row['value'], row['interval'])} | {verdict} |")
    for name in plots:
        lines += ["", f"![{name.removesuffix('.png')}]({name})"]
    if "importances.png" not in plots:
        lines += ["", "Parameter importances are plotted from three completed trials."]
    return "\n".join(lines) + "\n"
