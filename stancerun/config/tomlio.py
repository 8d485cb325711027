"""Read TOML (tomllib, or tomli on Python 3.10) and write it (tomli-w)."""

from __future__ import annotations

import sys

import tomli_w  # tiny and pure Python: cheap enough to import at start-up

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> dict:
    return tomllib.loads(text)


def parse_value(text: str):
    """One TOML value, as written after ``--set key=``; raises TOMLDecodeError."""
    return tomllib.loads(f"v = {text}")["v"]


def _drop_none(value):
    """``value`` without None dict values or list items, at any depth."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value if v is not None]
    return value


def dumps(data: dict) -> str:
    """``data`` as TOML; ``None`` means "not set" and is left out (TOML has no null)."""
    return tomli_w.dumps(_drop_none(data))
