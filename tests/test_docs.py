"""Meta-tests, as datasette has them: every key the code accepts is documented and every documented
key is accepted; every hook and every built-in component is documented and used by some test."""

from __future__ import annotations

import dataclasses
import importlib
import re
import types
from pathlib import Path

import pytest

from stancerun import hookspecs
from stancerun.config import sweepplan
from stancerun.config.experiment import options_schema
from stancerun.registry.table import NOUNS
from stancerun.config.schema import COMPONENT_SECTIONS, CORE_OPTIONS, EnsembleConfig, EvaluationConfig, TopLevel, TrainingConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
HEADING_OF_KIND = {kind: f"[[{section}]]" if is_list else f"[{section}]"
                   for section, (kind, is_list, _) in COMPONENT_SECTIONS.items()}
HEADING_OF_KIND["baselines"] = "Baselines"  # named in [evaluation] baselines, documented on their own


def sections(text: str, level: str) -> dict[str, str]:
    """Heading text -> body, for headings of exactly this level ('## ' or '### ')."""
    parts = re.split(rf"^{level}(.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def documented_keys(body: str) -> set[str]:
    """Keys in the first column of markdown tables: | `key` | ..."""
    return set(re.findall(r"^\|\s*`([^`]+)`\s*\|", body, flags=re.M))


@pytest.fixture(scope="module")
def experiments_doc():
    return (DOCS / "experiments.md").read_text(encoding="utf-8")


def test_top_level_and_training_keys_are_documented(experiments_doc):
    top = sections(experiments_doc, "## ")
    expected_top = {f.name for f in dataclasses.fields(TopLevel)} | {"extends"}
    assert expected_top <= documented_keys(top["Top level"])
    for heading, schema in (("[training]", TrainingConfig), ("[evaluation]", EvaluationConfig), ("[ensemble]", EnsembleConfig)):
        missing = {f.name for f in dataclasses.fields(schema)} - documented_keys(top[heading])
        assert not missing, f"undocumented {heading} keys: {sorted(missing)}"
    for section, options in CORE_OPTIONS.items():
        assert set(options) <= documented_keys(top[f"[{section}]"])


def test_every_builtin_component_option_is_documented(experiments_doc, builtin_registry):
    top = sections(experiments_doc, "## ")
    missing = []
    for kind, components in builtin_registry.components.items():
        heading = HEADING_OF_KIND[kind]
        subsections = sections(top[heading], "### ")
        for name, component in components.items():
            body = subsections.get(f'use = "{name}"')
            if body is None:
                missing.append(f"{heading}: no '### use = \"{name}\"' subsection")
                continue
            options, _ = options_schema(component.factory)
            for option in set(options) - documented_keys(body):
                missing.append(f"{heading} {NOUNS[kind]} '{name}': option '{option}'")
    assert not missing, "undocumented:\n" + "\n".join(missing)


def test_every_hook_is_documented():
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspecs) if name.startswith("stancerun_register_")]
    assert len(hooks) == len(hookspecs.KINDS) == 6
    for hook in hooks:
        assert f"`{hook}`" in text or f"def {hook}(" in text, hook


def test_sweep_keys_are_documented_both_ways(experiments_doc):
    documented = documented_keys(sections(experiments_doc, "## ")["[sweep]"]) - {'"dotted.key"'}
    assert documented == set(sweepplan.DEFAULTS), (sorted(documented), sorted(sweepplan.DEFAULTS))


def test_every_documented_key_is_accepted(experiments_doc, builtin_registry):
    """The other direction: a key in docs/experiments.md that the code does not take is a lie."""
    top = sections(experiments_doc, "## ")
    wrong = []
    for heading, schema in (("Top level", TopLevel), ("[training]", TrainingConfig), ("[evaluation]", EvaluationConfig),
                            ("[ensemble]", EnsembleConfig)):
        accepted = {f.name for f in dataclasses.fields(schema)} | {"extends"}
        wrong += [f"{heading}: {key}" for key in documented_keys(top[heading]) - accepted]
    for kind, components in builtin_registry.components.items():
        heading = HEADING_OF_KIND[kind]
        core = set(CORE_OPTIONS.get({"datasets": "data"}.get(kind, kind), {}))
        preamble = top[heading].split("\n### ")[0]  # keys every component of the section shares
        wrong += [f"{heading}: {key}" for key in documented_keys(preamble) - core
                  if not key.startswith("split.")]  # the split table's own keys: checked by the data tests
        for title, body in sections(top[heading], "### ").items():
            named = re.fullmatch(r'use = "(.+)"', title)
            if named is None:
                continue  # a subsection about something else (Learning curves)
            component = components.get(named.group(1))
            if component is None:
                wrong.append(f"{heading}: '### {title}' names no built-in {NOUNS[kind]}")
                continue
            options, _ = options_schema(component.factory)
            wrong += [f"{heading} {title}: {key}" for key in documented_keys(body) - set(options) - core]
    assert not wrong, "documented but not accepted:\n" + "\n".join(wrong)


def test_every_hook_and_builtin_component_is_used_by_a_test(builtin_registry):
    """A hook or component that no test names has no test: names are matched as an experiment
    names them (``use = "lora"``, a baseline in a list), in the test files other than this one."""
    tests = "\n".join(path.read_text(encoding="utf-8") for path in Path(__file__).parent.glob("test_*.py")
                      if path.name != Path(__file__).name)
    untested = [hook for hook in dir(hookspecs) if hook.startswith("stancerun_register_") and hook not in tests]
    for kind, components in builtin_registry.components.items():
        for name in components:
            forms = ([f'"{name}"'] if kind == "baselines"  # named in [evaluation] baselines = [...]
                     else [f'use = "{name}"', f'"use": "{name}"', f'use="{name}"'])
            if not any(form in tests for form in forms):
                untested.append(f"{NOUNS[kind]} '{name}'")
    assert not untested, "no test uses: " + ", ".join(untested)


# -- the dotted paths the docs name, and the plugin surface they teach ------------------------
ROOT = DOCS.parent
DOTTED = re.compile(r"(?<![\w./-])stancerun(?:\.[A-Za-z_]\w*)+")
#: A last part that makes a dotted name a file (model/stancerun.json), not a Python path.
FILE_SUFFIXES = {"json", "jsonl", "toml", "md", "csv", "py", "txt", "yaml", "yml", "log", "png", "whl"}


def documented_paths(paths) -> dict[str, str]:
    """Every stancerun.* dotted path the files name -> where it is first named (file:line)."""
    found = {}
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for dotted in DOTTED.findall(line):
                if dotted.rpartition(".")[2] not in FILE_SUFFIXES:
                    found.setdefault(dotted, f"{path.relative_to(ROOT)}:{number}")
    return found


def resolve(dotted: str):
    """The object a dotted path names: its longest importable module, then attributes."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # the module exists but needs something missing
                raise
            continue
        for attribute in parts[end:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_every_stancerun_path_in_the_docs_imports():
    paths = documented_paths(sorted(DOCS.glob("*.md")) + [ROOT / "README.md"])
    assert "stancerun.testing" in paths and "stancerun.RowDataset" in paths  # the scan sees both kinds
    broken = []
    for dotted, where in sorted(paths.items()):
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as error:
            broken.append(f"{where}: {dotted}: {type(error).__name__}: {error}")
    assert not broken, "paths the docs name that do not import:\n" + "\n".join(broken)


def test_the_plugin_docs_teach_the_surface_and_nothing_else():
    import stancerun

    paths = documented_paths([DOCS / "plugins.md", DOCS / "writing-plugins.md"])
    outside = [f"{where}: {dotted}" for dotted, where in sorted(paths.items())
               if dotted.split(".")[1] not in stancerun.__all__ and not dotted.startswith("stancerun.testing")]
    assert not outside, "internal paths in the plugin docs (use stancerun.<name>):\n" + "\n".join(outside)
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    undocumented = [name for name in stancerun.__all__ if name != "__version__" and f"`stancerun.{name}`" not in text]
    assert not undocumented, f"names of the surface that docs/plugins.md does not list: {undocumented}"


def python_block(text: str, containing: str) -> str:
    """The ```python block of a doc that contains ``containing``."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_the_documented_tsv_dataset_reads_its_own_files_for_evaluate(tmp_path):
    # docs/plugins.md's dataset example, as a new author copies it: it trains on TSV, and
    # `stancerun evaluate --data new.tsv` reads the new file through the same read_file.
    from stancerun.components.assembly import FORMAT
    from stancerun.inference.evaluate import read_labelled
    from stancerun.testing import build, build_registry

    module = types.ModuleType("tsv_stance")
    exec(python_block((DOCS / "plugins.md").read_text(encoding="utf-8"), "class TsvDataset"), module.__dict__)
    registry = build_registry([("tsvplug", module, "tsv-stance", "0.1")])
    rows = "text\tlabel\n" + "".join(f"{w} it, really\t{label}\n" for w, label in
                                         [("love", "support"), ("hate", "oppose")] * 5)
    (tmp_path / "train.tsv").write_text(rows, encoding="utf-8")
    (tmp_path / "new.tsv").write_text("text\tlabel\nhate it, truly\toppose\nlove, yes\tsupport\n", encoding="utf-8")
    options = {"train": str(tmp_path / "train.tsv"), "labels": ["support", "oppose"]}
    splits = build(registry, "datasets", {"use": "tsv", **options}).load()
    assert splits.labels == ["support", "oppose"] and len(splits.train) + len(splits.validation) == 10

    record = {"use": "tsv", "plugin": "tsvplug", "distribution": "tsv-stance", "version": "0.1", "options": options}
    info = {"format": FORMAT, "labels": splits.labels, "components": {"data": record}}
    examples = read_labelled(tmp_path / "new.tsv", info, tmp_path, registry)
    assert (examples.texts, examples.labels) == (["hate it, truly", "love, yes"], [1, 0])


def test_the_documented_example_package_passes_its_own_tests(tmp_path):
    # docs/plugins.md's complete package (acme_stance) with its tests/test_acme.py, copied as they
    # are and run by pytest in a new process: what the docs teach works as written.
    import os
    import subprocess
    import sys

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    (tmp_path / "acme_stance").mkdir()
    (tmp_path / "acme_stance" / "__init__.py").write_text(python_block(text, "def cohen_kappa("), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_acme.py").write_text(python_block(text, "def test_cohen_kappa("), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 passed" in done.stdout
