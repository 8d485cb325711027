"""The core's import graph, read from the source (nothing is imported): the packages stacked in
LAYERS, each importing only those below it; no cycles among stancerun.* modules; no core module
reaching into a built-in plugin (stancerun_*).

Every import counts, including those inside functions: a lazy import still ties the two
modules together, it only delays the cost.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stancerun"
#: Left out of the graph: the package's re-exports and the `python -m` entry point.
IGNORED = {"stancerun", "stancerun.__main__"}


#: The house, bottom to top: a module imports only from its own unit and the units of lower layers.
#: A unit is a top-level module or a subpackage; every one of them stands in exactly one layer.
LAYERS = (
    ("stancerun.errors", "stancerun.kinds"),     # the exceptions and one-line problems; the table of plugin kinds
    ("stancerun.hookspecs", "stancerun.options"),  # the hooks plugins implement; the option types they annotate with
    ("stancerun.registry",),                     # entry-point discovery and the table of what plugins register
    ("stancerun.data",),                         # rows -> labelled splits, data checks, batching
    ("stancerun.huggingface",),                  # Hugging Face models: where a name loads from, checked without torch
    ("stancerun.contracts",),                    # what the core asks of every object a plugin builds
    ("stancerun.config",),                       # TOML -> a validated experiment (torch-free)
    ("stancerun.components",),                   # building a run's plugin objects, preflight
    ("stancerun.evaluation",),                   # statistics, analysis, baselines, the ensemble
    ("stancerun.rundir",),                       # the run directory's files and the saved model
    ("stancerun.reporting",),                    # report.md, plots, the leaderboard
    ("stancerun.engine",),                       # the loop, checkpoints, refit, one run
    ("stancerun.inference",),                    # predict, evaluate, export, ONNX, serve
    ("stancerun.studies",),                      # sweeps, repeats, learning curves
    ("stancerun.cli",),                          # the command line
    ("stancerun.testing",),                      # pytest fixtures for plugin authors (runs experiments)
)
#: At most this many modules at stancerun/'s top level (the package's own __init__ and __main__ included).
MAX_TOP_LEVEL = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path):
    """(imported module, line) for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base, node.lineno
            for alias in node.names:  # `from stancerun import x` imports module stancerun.x
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}", node.lineno


def graph() -> dict[str, dict[str, int]]:
    """{module: {imported stancerun module: first line}}, without the ignored modules."""
    edges = {name: {} for name in MODULES if name not in IGNORED}
    for name in edges:
        for target, line in imports(name, MODULES[name]):
            if target in MODULES and target not in IGNORED and target != name:
                edges[name].setdefault(target, line)
    return edges


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [group for group in found if len(group) > 1]


def shortest_cycle(edges, group: list[str]) -> list[str]:
    """One shortest cycle through the group's first module (breadth-first), for the message."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(edges[node]):
            if other == start:
                return paths[node] + [start]
            if other in members and other not in paths:
                paths[other] = paths[node] + [other]
                queue.append(other)
    return group


def test_the_graph_sees_every_kind_of_import():
    edges = graph()
    assert "stancerun.errors" in edges["stancerun.config.experiment"]  # from stancerun.errors import ...
    assert "stancerun.config.tomlio" in edges["stancerun.config.experiment"]  # from stancerun import tomlio
    assert "stancerun.config.sweepplan" in edges["stancerun.studies.sweep"]
    assert not edges["stancerun.config.sweepplan"]  # the sweep plan is pure: it imports nothing of ours


def test_no_import_cycles_among_core_modules():
    edges = graph()
    groups = strongly_connected(edges)
    report = []
    for group in groups:
        cycle = shortest_cycle(edges, group)
        report.append(f"cycle among {', '.join(group)}\n  e.g. " + " -> ".join(cycle) + "\n" + "\n".join(
            f"  {a} -> {b} ({MODULES[a].relative_to(ROOT)}:{edges[a][b]})" for a in group for b in edges[a] if b in group))
    assert not groups, "import cycles:\n" + "\n".join(report)


def test_core_never_imports_a_builtin_plugin():
    # Built-in plugins come through the same door as third-party ones (entry points); the
    # core importing one directly would make it impossible to replace or leave out.
    found = [f"{path.relative_to(ROOT)}:{line}: imports {target}"
             for name, path in MODULES.items() for target, line in imports(name, path)
             if target.split(".")[0].startswith("stancerun_")]
    assert not found, "core modules import built-in plugins:\n" + "\n".join(found)


def imports_torch_at_load(path: Path) -> bool:
    """Whether importing the module imports torch (a top-level `import torch` / `from torch...`)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def reachable(edges, start: str) -> set[str]:
    """Every module ``start`` imports, directly or not (itself included)."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += list(edges.get(node, ()))
    return seen


def test_commands_that_only_read_files_never_reach_torch():
    # `compare` reads run directories and `validate` reads TOML: everything they can import,
    # lazily or not, must load without torch (seconds of start-up, and no GPU needed).
    edges = graph()
    heavy = {name for name, path in MODULES.items() if imports_torch_at_load(path)}
    assert "stancerun.engine.trainer" in heavy  # the check sees what it should
    for start in ("stancerun.reporting.compare", "stancerun.config.experiment", "stancerun.components.assembly"):
        seen = reachable(edges, start)
        assert not seen & heavy, f"{start} reaches modules that import torch: {sorted(seen & heavy)}"


def unit(module: str) -> str:
    """The top-level module or subpackage a module belongs to: stancerun.engine.trainer -> stancerun.engine."""
    return ".".join(module.split(".")[:2])


RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def test_every_unit_stands_in_one_layer():
    units = {unit(name) for name in MODULES if name not in IGNORED}
    assert not units - set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"
    assert not set(RANK) - units, f"LAYERS names what does not exist: {sorted(set(RANK) - units)}"


def test_no_package_imports_one_above_it():
    found = [f"{MODULES[name].relative_to(ROOT)}:{line}: {unit(name)} imports {target}, which stands above it"
             for name, targets in graph().items() for target, line in targets.items()
             if RANK[unit(target)] > RANK[unit(name)]]
    assert not found, "imports that go up the layers:\n" + "\n".join(found)


def test_the_top_level_stays_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} modules at stancerun/'s top level: {top}"
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        assert ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))), \
            f"{package.relative_to(ROOT)}/__init__.py: say in a docstring what the package holds"


# -- the plugin surface: built-ins and the example use `import stancerun` and nothing else of it --
EXAMPLE = ROOT / "examples" / "stancerun-acme"
#: What a plugin's code may import of stancerun's; its tests may also use the testing kit.
SURFACE = {"stancerun"}
TEST_SURFACE = SURFACE | {"stancerun.testing"}


def plugin_sources():
    """(module name, path, its own top-level package, what of stancerun it may import) for every
    Python file of the built-in plugins and of the example package, its tests included."""
    for path in sorted((ROOT / "plugins").glob("stancerun_*/**/*.py")):
        parts = path.relative_to(ROOT / "plugins").with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path, parts[0], SURFACE
    for path in sorted((EXAMPLE / "stancerun_acme").rglob("*.py")):
        parts = path.relative_to(EXAMPLE).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path, "stancerun_acme", SURFACE
    for path in sorted((EXAMPLE / "tests").rglob("*.py")):
        yield f"tests.{path.stem}", path, "stancerun_acme", TEST_SURFACE


def surface_breaches() -> list[str]:
    found = []
    for name, path, own, allowed in plugin_sources():
        for target, line in imports(name, path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top == "stancerun" and target not in allowed:
                found.append(f"{where}: imports {target}; use what `import stancerun` offers (stancerun.__all__)")
            elif top.startswith("stancerun_") and top != own:
                found.append(f"{where}: imports another plugin, {target}; what plugins share belongs in stancerun")
    return found


def test_the_check_sees_every_plugin_and_the_example():
    packages = {own for _, _, own, _ in plugin_sources()}
    assert {"stancerun_hf", "stancerun_data", "stancerun_metrics", "stancerun_fewshot", "stancerun_acme"} <= packages
    assert any(path.parent.name == "tests" for _, path, _, _ in plugin_sources())


def test_plugins_import_only_the_public_surface_and_not_each_other():
    # Built-ins come through the same door as a third-party plugin: `import stancerun` is all
    # they may use of the core (their tests may add stancerun.testing), and none leans on another.
    breaches = surface_breaches()
    assert not breaches, "plugins reach past the public surface:\n" + "\n".join(breaches)


def test_the_surface_names_resolve_and_load_no_torch():
    import subprocess
    import sys

    import stancerun

    heavy = {"Collator", "encode_examples", "model_inputs"}  # batches are torch tensors
    light = [name for name in stancerun.__all__ if name not in heavy and name != "__version__"]
    code = ("import sys, stancerun\nassert 'torch' not in sys.modules, 'import stancerun imported torch'\n"
            f"for name in {light!r}:\n    getattr(stancerun, name)\n"
            "assert 'torch' not in sys.modules, 'a torch-free name imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in stancerun.__all__:  # every promised name is there (the torch ones too, in this process)
        assert getattr(stancerun, name) is not None, name
    assert "resolve_model" in dir(stancerun)


#: The longest a function may run, from its def line to its last line: past it, split it into named steps.
MAX_FUNCTION_LINES = 60


def test_no_function_runs_over_60_lines():
    found = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} runs {length} lines")
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n" + "\n".join(found)


def test_commands_that_read_files_only_are_torch_free_modules():
    # A command's module holds its handler, lazy imports included: compare's and plugins' reach no torch.
    edges = graph()
    heavy = {name for name, path in MODULES.items() if imports_torch_at_load(path)}
    for start in ("stancerun.cli.compare", "stancerun.cli.plugins"):
        seen = reachable(edges, start)
        assert not seen & heavy, f"{start} reaches modules that import torch: {sorted(seen & heavy)}"
