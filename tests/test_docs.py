"""Meta-tests: every key the code accepts is documented, every hook is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from stancerun import hookspecs
from stancerun.config import options_schema
from stancerun.registry import NOUNS
from stancerun.schema import COMPONENT_SECTIONS, CORE_OPTIONS, EnsembleConfig, EvaluationConfig, TopLevel, TrainingConfig

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
