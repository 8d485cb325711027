"""Meta-tests, as datasette has them: every key the code accepts is documented and every documented
key is accepted; every hook and every built-in component is documented and used by some test."""

from __future__ import annotations

import dataclasses
import re
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
