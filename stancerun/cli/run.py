"""`stancerun run` (and the bare `stancerun EXPERIMENT.toml`): train, evaluate and save an
experiment, or its sweep, repeats or learning curve."""

from __future__ import annotations

from stancerun.cli.validate import add_experiment_arguments, load_checked


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="train, evaluate and save an experiment")
    add_experiment_arguments(parser)
    parser.add_argument("--output-dir", help="where the run directory goes (default: the experiment's output_dir)")
    parser.add_argument("--dry-run", action="store_true", help="resolve, load data and model, print the plan; train nothing")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="a sweep: run its trials in N worker processes on this machine (default 1)")
    parser.add_argument("--storage", metavar="URL",
                        help="a sweep: the study's database, e.g. postgresql+psycopg2://user@host/db (default: a journal "
                             "file in the sweep directory), so that workers on other machines can join")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from stancerun.rundir.artifacts import sigterm_interrupts

    with sigterm_interrupts():  # from the start: SIGTERM while the model loads exits 130, as SIGINT does
        return _run(args, load_checked(args))


def _run(args, experiment) -> int:
    from stancerun.studies.curve import run_curve
    from stancerun.errors import UsageError
    from stancerun.studies.repeats import run_repeated
    from stancerun.engine.run import run_experiment

    if (args.workers != 1 or args.storage) and "sweep" not in experiment.config:
        raise UsageError("--workers and --storage are for sweeps: this experiment has no [sweep] table")
    if args.workers < 1:
        raise UsageError(f"--workers: expected a number >= 1, got {args.workers}")
    evaluation = experiment.evaluation
    if "sweep" in experiment.config and not args.dry_run:
        from stancerun.studies.sweep_workers import run_sweep

        run_sweep(experiment, output_dir=args.output_dir, workers=args.workers, storage=args.storage)
    elif (evaluation.cv_folds or evaluation.seeds) and not args.dry_run:
        run_repeated(experiment, output_dir=args.output_dir)
    elif evaluation.learning_curve and not args.dry_run:
        run_curve(experiment, output_dir=args.output_dir)
    else:
        run_experiment(experiment, output_dir=args.output_dir, dry_run=args.dry_run)
    return 0
