"""`stancerun sweep join`: add this machine as a worker to a sweep that exists."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="work on a sweep that exists: `stancerun sweep join SWEEP_DIR_OR_STORAGE_URL`")
    actions = parser.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    join = actions.add_parser("join", help="add this machine as a worker: it runs queued trials until none is left")
    join.add_argument("target", help="the sweep directory (shared file system), or the study's storage URL")
    join.add_argument("--storage", metavar="URL", help="the storage URL, with its password, for a sweep directory")
    join.add_argument("--study", help="the sweep's name when the storage holds several")
    join.add_argument("--output-dir", help="where this machine keeps its trials' run directories (default: the sweep "
                                           "directory when this machine sees it, else ./STUDY_NAME)")
    join.add_argument("--quiet", action="store_true", help="one line per trial instead of each run's output")
    parser.set_defaults(handler=sweep)


def sweep(args) -> int:
    from stancerun.studies.sweep_workers import join_sweep

    # The only action so far: argparse requires it.
    join_sweep(args.target, storage=args.storage, study_name=args.study, output_dir=args.output_dir, quiet=args.quiet)
    return 0
