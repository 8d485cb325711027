"""What each CLI command does; every function takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import warnings


def validate(args) -> int:
    from stancerun.config import load_experiment

    experiment = load_experiment(args.experiment, args.overrides)
    # Plain TOML on stdout, so the output can be saved and run again.
    print(experiment.to_toml(), end="")
    return 0


def plugins(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from stancerun.plugins import PluginWarning, get_registry
    from stancerun.registry import NOUNS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # failures are shown in the table instead
        registry = get_registry()
    table = Table(title="stancerun plugins")
    for column in ("plugin", "distribution", "version", "kind", "names"):
        table.add_column(column)
    for info in registry.plugins:
        registered = registry.by_plugin(info.name)
        if info.error:
            table.add_row(info.name, info.distribution, info.version, "[red]failed[/]", f"[red]{info.error}[/]")
        for kind, names in registered.items():
            table.add_row(info.name, info.distribution, info.version, NOUNS[kind], ", ".join(names))
        if not registered and not info.error:
            table.add_row(info.name, info.distribution, info.version, "-", "(registers nothing)")
    Console().print(table)
    return 0


def run(args) -> int:
    from stancerun.errors import UsageError

    raise UsageError("`stancerun run` arrives with the engine (issue 3); use `stancerun validate` for now")
