"""`stancerun validate`: resolve and check an experiment, print it as TOML; never imports torch.

`run` takes its experiment argument and its checks from here: it fails exactly as validate does.
"""

from __future__ import annotations

import argparse


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key with a TOML value, e.g. --set training.learning_rate=1e-4 (repeatable)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="resolve and check an experiment; print it as TOML (never imports torch)")
    add_experiment_arguments(parser)
    parser.set_defaults(handler=validate)


def load_checked(args):
    """The experiment, validated, and everything `run` would fail on in its first minute checked
    (the data, the model's whereabouts, metric names): before any run directory or torch."""
    from stancerun.components import preflight
    from stancerun.config.experiment import load_experiment
    from stancerun.registry.discovery import get_registry

    experiment = load_experiment(args.experiment, args.overrides)
    if "sweep" in experiment.config:
        from stancerun.config.experiment import child_experiments

        for _, _, child in child_experiments(experiment, get_registry()):
            preflight.check(child, get_registry())
    else:
        preflight.check(experiment, get_registry())
    if experiment.evaluation.learning_curve:
        from stancerun.studies import curve

        curve.check(experiment, get_registry())  # a size the data cannot supply, before anything trains
    return experiment


def validate(args) -> int:
    experiment = load_checked(args)
    # Plain TOML on stdout, so the output can be saved and run again.
    print(experiment.to_toml(), end="")
    return 0
