"""The command line: argument parsing and error -> exit-code translation, nothing else.

Exit codes: 0 success, 1 the run failed, 2 the experiment or command line is wrong, 130
interrupted. Heavy modules are imported inside each command, so ``--help``, ``validate``
and ``plugins`` never import torch.
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = ("run", "validate", "plugins", "predict", "evaluate", "compare", "export", "resume", "sweep", "serve")


def _add_experiment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key with a TOML value, e.g. --set training.learning_rate=1e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stancerun",
        description="Fine-tune pretrained encoders into text classifiers from a TOML experiment file.",
        epilog="`stancerun EXPERIMENT.toml` is short for `stancerun run EXPERIMENT.toml`.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train, evaluate and save an experiment")
    _add_experiment(run)
    run.add_argument("--output-dir", help="where the run directory goes (default: the experiment's output_dir)")
    run.add_argument("--dry-run", action="store_true", help="resolve, load data and model, print the plan; train nothing")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="a sweep: run its trials in N worker processes on this machine (default 1)")
    run.add_argument("--storage", metavar="URL",
                     help="a sweep: the study's database, e.g. postgresql+psycopg2://user@host/db (default: a journal "
                          "file in the sweep directory), so that workers on other machines can join")

    validate = sub.add_parser("validate", help="resolve and check an experiment; print it as TOML (never imports torch)")
    _add_experiment(validate)

    plugins = sub.add_parser("plugins", help="list every plugin, its distribution and version, and what it registers")
    plugins.add_argument("--verbose", "-v", action="store_true",
                         help="also each component's options (type, default or required) and its docstring's first sentence")
    plugins.add_argument("--json", action="store_true",
                         help="print everything --verbose shows, clashes and unknown allow-list names as JSON")

    predict = sub.add_parser("predict", help="classify texts with a run's saved model")
    predict.add_argument("run_dir", help="a run directory (holds model/), or an ONNX export of one (stancerun export --onnx)")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    predict.add_argument("--input", help="a CSV or JSONL file with the texts (the column the model was trained on)")
    predict.add_argument("--output", help="write JSONL, or CSV if the name ends in .csv (default: JSONL on stdout)")
    predict.add_argument("--pair", help="the text pair (e.g. the stance target) for texts given on the command line")
    predict.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    predict.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                         help="weights and activations: float32 (default, exact) or bfloat16/float16 (faster on "
                              "GPUs and on CPUs with AMX or AVX512-BF16; probabilities differ by ~1e-2)")

    evaluate = sub.add_parser("evaluate", help="score a run's saved model on new labelled data")
    evaluate.add_argument("run_dir", help="a run directory")
    evaluate.add_argument("--data", required=True, help="a labelled CSV or JSONL file (the run's text/label columns)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")

    compare = sub.add_parser("compare", help="one leaderboard of runs, with intervals and significance")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--json", action="store_true", help="print the leaderboard as JSON")

    resume = sub.add_parser("resume", help="continue an interrupted run from its last complete checkpoint, or a sweep")
    resume.add_argument("run_dir", help="the interrupted run's (or sweep's) directory")
    resume.add_argument("--storage", metavar="URL", help="a sweep in a database: its URL with the password")

    sweep = sub.add_parser("sweep", help="work on a sweep that exists: `stancerun sweep join SWEEP_DIR_OR_STORAGE_URL`")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    join = sweep_sub.add_parser("join", help="add this machine as a worker: it runs queued trials until none is left")
    join.add_argument("target", help="the sweep directory (shared file system), or the study's storage URL")
    join.add_argument("--storage", metavar="URL", help="the storage URL, with its password, for a sweep directory")
    join.add_argument("--study", help="the sweep's name when the storage holds several")
    join.add_argument("--output-dir", help="where this machine keeps its trials' run directories (default: the sweep "
                                           "directory when this machine sees it, else ./STUDY_NAME)")
    join.add_argument("--quiet", action="store_true", help="one line per trial instead of each run's output")

    serve = sub.add_parser("serve", help="serve a run's model over HTTP (POST /predict, text-embeddings-inference's shapes)")
    serve.add_argument("run_dir", help="a run directory, or an ONNX export of one (then torch is never imported)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080, help="default 8080")
    serve.add_argument("--max-batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="how long a request waits for others to share its forward pass (default 5)")
    serve.add_argument("--max-client-batch-size", type=int, default=32, help="texts per request; more is a 413 (default 32)")
    serve.add_argument("--max-queue", type=int, default=512, help="requests waiting; more is a 429 (default 512)")
    serve.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /predict (or set STANCERUN_API_KEY)")
    serve.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                       help="a run's weights and activations, as for predict (default float32)")

    export = sub.add_parser("export", help="write a standalone transformers model (LoRA merged) with a model card")
    export.add_argument("run_dir", help="a run directory")
    export.add_argument("out_dir", help="where the model goes (new or empty)")
    export.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights")
    export.add_argument("--onnx", action="store_true",
                        help="write an ONNX model (merged, calibration folded in) for onnxruntime instead; it must agree "
                             "with the run's predictions on the validation split, or nothing is written")
    export.add_argument("--int8", action="store_true", help="with --onnx: quantize the weights to int8 (dynamic quantization)")
    export.add_argument("--fine-tuned-only", action="store_true",
                        help="for a run that stacks baselines with the model: export the fine-tuned transformer alone "
                             "(its scores are the report's \"fine-tuned alone\" row, not the shipped ones)")
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The bare form `stancerun EXPERIMENT.toml` means `stancerun run EXPERIMENT.toml`.
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in COMMANDS:
        argv.insert(argv.index(first), "run")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from stancerun.cli import commands

    try:
        return getattr(commands, args.command)(args) or 0
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as error:  # the one place errors become messages and exit codes
        from stancerun.errors import StancerunError

        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(error, StancerunError):
            _print_error(str(error))
            return error.exit_code
        _print_error(f"{type(error).__name__}: {error}" + ("" if args.debug else "\n(run with --debug for the traceback)"))
        return 1
    finally:
        _end_process_group()


def entry() -> None:
    """The `stancerun` command and `python -m stancerun`: main(), then the process's exit.

    Under a launcher (WORLD_SIZE > 1) the exit skips the interpreter's finalization, after doing
    its useful part by hand (non-daemon threads joined, atexit handlers run, output flushed).
    Why: once DistributedDataParallel has wrapped a model, torch 2.13 keeps the gloo process
    group alive past destroy_process_group(), and its worker threads release each finished
    collective's tensors after the caller has moved on; a release needs the GIL, and a thread
    that asks for the GIL during finalization ends the process with SIGABRT ("terminate called
    without an active exception"). A sweep's last step is such a collective (the main process's
    "no trial left"), and about one exit in six aborted (tests/test_sweep.py); a barrier before
    leaving only moved the release into the barrier's own."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import atexit
        import threading

        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _end_process_group() -> None:
    """What accelerator.end_training() would do once per run, once per command: the runs of a
    sweep or a learning curve share one process group under `accelerate launch`."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


if __name__ == "__main__":  # pragma: no cover
    entry()
