"""`stancerun compare`: one leaderboard of runs, with intervals and significance; never imports torch."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="one leaderboard of runs, with intervals and significance")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    parser.set_defaults(handler=compare)


def compare(args) -> int:
    import json
    from pathlib import Path

    from stancerun.reporting.compare import compare as build_board
    from stancerun.reporting.compare import print_leaderboard

    board = build_board([Path(p) for p in args.run_dirs])
    if args.json:
        print(json.dumps(board, indent=2))
    else:
        print_leaderboard(board)
    return 0
