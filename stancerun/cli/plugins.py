"""`stancerun plugins`: every plugin, its distribution and version, and what it registers."""

from __future__ import annotations

import warnings


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plugins", help="list every plugin, its distribution and version, and what it registers")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also each component's options (type, default or required) and its docstring's first sentence")
    parser.add_argument("--json", action="store_true",
                        help="print everything --verbose shows, clashes and unknown allow-list names as JSON")
    parser.set_defaults(handler=plugins)


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
