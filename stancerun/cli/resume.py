"""`stancerun resume`: continue an interrupted run from its last complete checkpoint, or a sweep."""

from __future__ import annotations

from stancerun.cli.arguments import add_trust_remote_code


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("resume", help="continue an interrupted run from its last complete checkpoint, or a sweep")
    parser.add_argument("run_dir", help="the interrupted run's (or sweep's) directory")
    parser.add_argument("--storage", metavar="URL", help="a sweep in a database: its URL with the password")
    add_trust_remote_code(parser, help="allow the run's model (config.toml's trust_remote_code) to run Python code from its "
                                  "folder; only for runs you trust")
    parser.set_defaults(handler=resume)


def resume(args) -> int:
    from pathlib import Path

    from stancerun.engine.run import resume_run
    from stancerun.rundir.layout import RunDir
    from stancerun.studies.sweep_workers import resume_sweep

    run_dir = Path(args.run_dir)
    if RunDir(run_dir).sweep_plan.is_file():
        resume_sweep(run_dir, storage=args.storage, trust_remote_code=args.trust_remote_code)
    else:
        resume_run(run_dir, trust_remote_code=args.trust_remote_code)
    return 0
