"""`stancerun evaluate`: score a run's saved model on new labelled data."""

from __future__ import annotations

from stancerun.cli.arguments import add_trust_remote_code


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="score a run's saved model on new labelled data")
    parser.add_argument("run_dir", help="a run directory")
    parser.add_argument("--data", required=True, help="a labelled CSV or JSONL file (the run's text/label columns)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    add_trust_remote_code(parser)
    parser.set_defaults(handler=evaluate)


def evaluate(args) -> int:
    from pathlib import Path

    from stancerun.inference.evaluate import evaluate_run

    evaluate_run(Path(args.run_dir), Path(args.data), batch_size=args.batch_size,
                 trust_remote_code=args.trust_remote_code)
    return 0
