"""What each CLI command does; every function takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import warnings


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


def plugins(args) -> int:
    registry, unknown = _load_leniently(args)
    components = _describe_components(registry)
    if args.json:
        _print_plugins_json(registry, components, unknown)
        return 0
    from rich.console import Console

    console = Console()
    _print_plugins_table(console, registry, unknown)
    if args.verbose:
        _print_options(console, components)
    return 0


def _load_leniently(args):
    """Every plugin, loaded without stopping on a clash or a broken plugin (showing them is this
    command's job), and the allow-list's names that no installed plugin answers to."""
    import contextlib
    import sys

    from stancerun.registry.discovery import PluginWarning, load, unknown_allowed

    # For --json, whatever a plugin prints while it loads goes to stderr: stdout must stay JSON.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        warnings.simplefilter("ignore", PluginWarning)  # failures are shown in the table instead
        # Lenient: a clash that stops every run is exactly what this command must still show.
        registry = load(strict=False)
    return registry, unknown_allowed()


def _print_plugins_json(registry, components: list[dict], unknown: dict) -> None:
    import json

    report = {
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
                    for p in registry.plugins],
        "components": [{**c, "options": [{**o, "default": _jsonable(o["default"])} for o in c["options"]]}
                       for c in components],
        "clashes": [{"kind": c.kind, "name": c.name, "between": list(c.between), "message": c.message}
                    for c in registry.clashes],
        "unknown_allowed": list(unknown),
    }
    print(json.dumps(report, indent=2))  # plain print: rich would wrap and colour it


def _print_plugins_table(console, registry, unknown: dict) -> None:
    """One row per plugin and kind, then the clashes and the allow-list's unknown names."""
    from rich.markup import escape
    from rich.table import Table

    from stancerun.registry.table import NOUNS

    table = Table(title="stancerun plugins")
    for column in ("plugin", "distribution", "version", "kind", "names"):
        table.add_column(column)
    for info in registry.plugins:
        # A plugin left out for its name's sake registered nothing: what by_plugin finds is the other one's.
        registered = registry.by_plugin(info.name) if registry.plugin(info.name) is info else {}
        row = [escape(info.name), escape(info.distribution), escape(info.version)]
        if info.error:
            table.add_row(*row, "[red]failed[/]", f"[red]{escape(info.error)}[/]")
        for kind, names in registered.items():
            table.add_row(*row, NOUNS[kind], escape(", ".join(names)))
        if not registered and not info.error:
            table.add_row(*row, "-", "(registers nothing)")
    console.print(table)
    for clash in registry.clashes:
        console.print(f"[bold red]clash:[/] {escape(clash.message)} (every command but this one stops on it)",
                      soft_wrap=True)
    for message in unknown.values():
        console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True)


def _print_options(console, components: list[dict]) -> None:
    """--verbose: each component's options (name, type, default), or why it has none to show."""
    from rich.markup import escape
    from rich.table import Table

    for c in components:
        console.print()
        doc = f": {escape(c['doc'])}" if c["doc"] else ""
        console.print(f"[bold]{c['kind']} {escape(c['name'])}[/] (plugin {escape(c['plugin'])}){doc}", soft_wrap=True)
        if c["error"]:
            console.print(f"  [red]{escape(c['error'])}[/]", soft_wrap=True)
        elif not c["options"] and not c["other_options"]:
            console.print("  no options")
        else:
            options = Table(box=None, padding=(0, 2), show_edge=False)
            for column in ("option", "type", "default"):
                options.add_column(column)
            for o in c["options"]:
                default = "[bold]required[/]" if o["required"] else escape(repr(o["default"]))
                options.add_row(escape(o["name"]), escape(o["type"]), default)
            if c["other_options"]:
                options.add_row("(any other key)", "any value", "-")
            console.print(options)


def _describe_components(registry) -> list[dict]:
    """Each registered component with its options, read from its factory's signature by the
    code that validates experiments against it (config.option_rows)."""
    import inspect
    import re

    from stancerun.config.experiment import REQUIRED, option_rows
    from stancerun.hookspecs import KINDS
    from stancerun.registry.table import NOUNS
    from stancerun.options import UnsupportedAnnotation

    found = []
    for kind in KINDS:
        for name, component in sorted(registry.components[kind].items()):
            entry = {"kind": NOUNS[kind], "name": name, "plugin": component.plugin, "doc": "", "options": [],
                     "other_options": False, "error": None}
            # The summary: the first sentence, as docstrings wrap theirs over several lines.
            paragraph = " ".join((inspect.getdoc(component.factory) or "").strip().split("\n\n")[0].split())
            entry["doc"] = re.split(r"(?<=[.!?])\s+(?=[A-Z`])", paragraph, maxsplit=1)[0]
            try:
                rows, entry["other_options"] = option_rows(component.factory)
            except UnsupportedAnnotation as error:  # the component cannot be used: say why, as validate would
                entry["error"] = f"unusable: {error}"
                rows = []
            except Exception as error:  # a plugin's factory whose signature cannot be read: say so, list the rest
                entry["error"] = f"cannot read its options: {type(error).__name__}: {error}"
                rows = []
            entry["options"] = [{"name": option, "type": text, "default": None if default is REQUIRED else default,
                                 "required": default is REQUIRED} for option, text, default in rows]
            found.append(entry)
    return found


def _jsonable(value):
    """``value`` if JSON can carry it as it is, else its repr."""
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def run(args) -> int:
    from stancerun.studies.curve import run_curve
    from stancerun.errors import UsageError
    from stancerun.studies.repeats import run_repeated
    from stancerun.engine.run import run_experiment

    experiment = load_checked(args)
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


def predict(args) -> int:
    import sys
    from pathlib import Path

    from stancerun.rundir import artifacts
    from stancerun.errors import UsageError
    from stancerun.inference.onnx_predict import check_model_dir, predict_onnx, read_info
    from stancerun.inference.predict import dtype_note, format_rows, inference_device, predict, read_inputs

    run_dir = Path(args.run_dir)
    onnx = check_model_dir(run_dir, args.dtype)  # an ONNX export: onnxruntime, and torch is never imported
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts on the command line or --input FILE (one of the two)")
    # The input is checked before the model loads: a wrong column fails in 0.2 s, not after 3.5 s of loading.
    info = read_info(run_dir) if onnx else artifacts.read_model_info(run_dir / "model")
    if args.input:
        texts, pairs = read_inputs(Path(args.input), info.get("text_column") or "text", info.get("text_pair_column"))
    else:
        if info.get("text_pair_column"):
            if args.pair is None:
                raise UsageError(f"this model classifies (text, {info['text_pair_column']}) pairs: add --pair VALUE")
            pairs = [args.pair] * len(args.texts)
        else:
            pairs = None
        texts = list(args.texts)
    if onnx:
        rows = predict_onnx(run_dir, texts, pairs, args.batch_size)
    else:
        device = inference_device()
        note = dtype_note(args.dtype, device)
        if note:
            print(f"warning: {note}", file=sys.stderr)
        saved = artifacts.load_model(run_dir / "model", device=device, dtype=args.dtype)
        rows = predict(run_dir, texts, pairs, args.batch_size, saved=saved)
    output = Path(args.output) if args.output else None
    fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"
    text = format_rows(rows, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        artifacts.atomic_write(output, text)
    return 0


def evaluate(args) -> int:
    from pathlib import Path

    from stancerun.inference.evaluate import evaluate_run

    evaluate_run(Path(args.run_dir), Path(args.data), batch_size=args.batch_size)
    return 0


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


def export(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from stancerun.inference.export import export as export_model

    if args.onnx:
        from stancerun.inference.onnx_export import export_onnx

        figures = export_onnx(Path(args.run_dir), Path(args.out_dir), int8=args.int8)
        Console().print(f"[bold green]exported:[/] {args.out_dir} ({'int8' if args.int8 else 'float32'} ONNX, "
                        f"{figures['file_size'] / 1e6:.1f} MB): on the {figures['n']} validation texts its labels agree "
                        f"with the run's on {figures['agreement']:.2%}; {figures['metric']} {figures['metric_export']:.4f} "
                        f"against the run's {figures['metric_run']:.4f}. `stancerun predict {args.out_dir}` and "
                        f"`stancerun serve {args.out_dir}` run it without torch.")
        return 0
    if args.int8:
        from stancerun.errors import UsageError

        raise UsageError("--int8 quantizes an ONNX export: add --onnx")
    out = export_model(Path(args.run_dir), Path(args.out_dir), args.merge, args.fine_tuned_only)
    Console().print(f"[bold green]exported:[/] {out}  (how to load it: the \"Use\" section of {out / 'README.md'})")
    return 0


def resume(args) -> int:
    from pathlib import Path

    from stancerun.engine.run import resume_run
    from stancerun.studies.sweep import PLAN
    from stancerun.studies.sweep_workers import resume_sweep

    run_dir = Path(args.run_dir)
    if (run_dir / PLAN).is_file():
        resume_sweep(run_dir, storage=args.storage)
    else:
        resume_run(run_dir)
    return 0


def sweep(args) -> int:
    from stancerun.studies.sweep_workers import join_sweep

    # The only action so far: argparse requires it.
    join_sweep(args.target, storage=args.storage, study_name=args.study, output_dir=args.output_dir, quiet=args.quiet)
    return 0


def serve(args) -> int:
    import os
    from pathlib import Path

    from stancerun.errors import UsageError
    from stancerun.inference.serve import Limits, serve as run_server

    for name in ("max_batch_size", "max_client_batch_size", "max_queue", "port"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected a number >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms: expected a number >= 0, got {args.max_wait_ms}")
    limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_client_batch_size, args.max_queue)
    run_server(Path(args.run_dir), args.host, args.port, limits, args.api_key or os.environ.get("STANCERUN_API_KEY"),
               args.dtype)
    return 0
