"""The command line: the commands' list, the shared flags, and error -> exit-code translation.

Exit codes: 0 success, 1 the run failed, 2 the experiment or command line is wrong, 130
interrupted. Heavy modules are imported inside each command, so ``--help``, ``validate``
and ``plugins`` never import torch.
"""

from __future__ import annotations

import argparse
import os
import sys

from stancerun.cli import compare, evaluate, export, plugins, predict, resume, run, serve, sweep, validate

#: One module per command, holding its parser (add_parser) beside its handler; in the order
#: `stancerun --help` lists them. Each imports its heavy dependencies inside the handler.
COMMAND_MODULES = (run, validate, plugins, predict, evaluate, compare, resume, sweep, serve, export)
#: A command's name is its module's.
COMMANDS = tuple(module.__name__.rpartition(".")[2] for module in COMMAND_MODULES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stancerun",
        description="Fine-tune pretrained encoders into text classifiers from a TOML experiment file.",
        epilog="`stancerun EXPERIMENT.toml` is short for `stancerun run EXPERIMENT.toml`.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
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
    try:
        return args.handler(args) or 0
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
