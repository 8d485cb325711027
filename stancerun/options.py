"""Option types for component factories, and the checker that binds TOML values to them.

A factory's signature is its schema: ``def csv(*, train: File, labels: list[str] | None = None)``.
``check`` turns a TOML value into the annotated type or explains, in words, what was expected.
Supported annotations (:data:`SUPPORTED`): bool, int, float, str, ``list[X]``, ``dict[str, X]``,
``X | None``, ``Literal[...]``, frozen dataclasses (nested tables), ``Annotated[X, Range(...) | File()]``
and ``Any``; :func:`unsupported` finds any other.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union


@dataclass(frozen=True)
class Range:
    """Bounds for a number: ``Annotated[float, Range(gt=0)]``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value) -> str | None:
        if self.ge is not None and value < self.ge:
            return f">= {self.ge}"
        if self.gt is not None and value <= self.gt:
            return f"> {self.gt}"
        if self.le is not None and value > self.le:
            return f"<= {self.le}"
        if self.lt is not None and value >= self.lt:
            return f"< {self.lt}"
        return None

    def describe(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge}")
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.le is not None:
            parts.append(f"<= {self.le}")
        if self.lt is not None:
            parts.append(f"< {self.lt}")
        return " and ".join(parts)


@dataclass(frozen=True)
class FileMarker:
    """Marks a string option as a path to an existing file, relative to the experiment file."""

    directory: bool = False


#: A path to an existing data file, resolved relative to the file that wrote it.
File = Annotated[str, FileMarker()]
#: A path to an existing directory, resolved the same way.
Directory = Annotated[str, FileMarker(directory=True)]


@dataclass(frozen=True)
class Split:
    """How missing validation/test splits are carved out of the training data."""

    test_size: Annotated[float, Range(gt=0, lt=1)] = 0.2
    seed: int = 42
    stratify: bool = True


class Invalid(Exception):
    """A value that does not fit its annotation; ``key`` is relative to the checked value."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.message = message
        self.key = key


def describe(annotation) -> str:
    """What an annotation expects, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        files = [m for m in args[1:] if isinstance(m, FileMarker)]
        base = f"a path to a {'directory' if files[0].directory else 'file'}" if files else describe(args[0])
        ranges = [m.describe() for m in args[1:] if isinstance(m, Range)]
        return f"{base} {' and '.join(ranges)}" if ranges else base
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner) + (" (or leave it out)" if len(inner) < len(args) else "")
    if annotation in (list, dict):
        return "a list" if annotation is list else "a table"
    if origin is list:
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(annotation):
        return "a table with keys " + ", ".join(f.name for f in dataclasses.fields(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            word, _, rest = text[len(article):].partition(" ")
            return f"{word}s {rest}".strip()
    return text


def _show(value) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}
    name = kind.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, (list, dict)) else ""
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"the {name} {shown}".rstrip()


#: What an option may be annotated with, for messages about one that is not.
SUPPORTED = ("bool, int, float, str, list[X], dict[str, X], X | None, Literal[...], a frozen dataclass, "
             "Annotated[X, stancerun.Range(...)], stancerun.File, stancerun.Directory, Any")


class UnsupportedAnnotation(TypeError):
    """An option annotated with a type :func:`check` cannot convert a TOML value to: the plugin's
    mistake, found whether or not an experiment sets the option."""

    def __init__(self, annotation, option: str | None = None):
        self.annotation, self.option = annotation, option
        where = f"option '{option}': " if option else ""
        super().__init__(f"{where}{shown(annotation)} is not an annotation stancerun can check a TOML value against "
                         f"(supported: {SUPPORTED})")


def shown(annotation) -> str:
    """An annotation as its author wrote it: pathlib.Path, tuple[int, int]."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        module = annotation.__module__
        return annotation.__qualname__ if module == "builtins" else f"{module}.{annotation.__qualname__}"
    return repr(annotation).removeprefix("typing.")


def unsupported(annotation):
    """The part of ``annotation`` that :func:`check` cannot handle (None when it handles all of it)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (bool, int, float, str, Any, list, dict) or origin is Literal:
        return None
    if origin is Annotated or (origin is list and args):
        return unsupported(args[0])
    if origin is dict:
        return unsupported(args[1]) if args else None  # the keys are TOML keys: strings
    if origin in (Union, types.UnionType):
        return next((bad for arg in args if arg is not type(None) and (bad := unsupported(arg)) is not None), None)
    if dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        return next((bad for f in dataclasses.fields(annotation) if (bad := unsupported(hints[f.name])) is not None),
                    None)
    return annotation


#: What a converter returns for a value of the wrong shape ("expected ..., got ..." follows).
_MISFIT = object()


def check(value, annotation, *, base_dir: Path | None = None, must_exist: bool = True):
    """Return ``value`` converted to ``annotation``; raise :class:`Invalid` if it does not fit.

    ``File`` options come back as absolute paths (relative ones are joined to ``base_dir``);
    ``must_exist=False`` skips the existence check (rebuilding a saved run's dataset only to read
    new files with it must not need the old training files). An annotation outside
    :data:`SUPPORTED` raises :class:`UnsupportedAnnotation`.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (list, dict):  # bare list / dict: any items
        origin = annotation
    if origin is Annotated:
        return _check_annotated(value, annotation, base_dir, must_exist)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        return _check_union(value, annotation, base_dir, must_exist)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise Invalid(f"expected {describe(annotation)}, got {value!r}")
    if annotation in (bool, int, float, str):
        converted = _check_scalar(value, annotation)
    elif origin in (list, dict):
        converted = _check_container(value, origin, args, base_dir, must_exist)
    elif dataclasses.is_dataclass(annotation):
        converted = value if isinstance(value, annotation) else _MISFIT
        if isinstance(value, dict):
            converted = check_table(value, annotation, base_dir=base_dir, must_exist=must_exist)
    else:
        raise UnsupportedAnnotation(annotation)
    if converted is _MISFIT:
        raise Invalid(f"expected {describe(annotation)}, got {_show(value)}")
    return converted


def _check_annotated(value, annotation, base_dir, must_exist):
    """``Annotated[X, markers]``: X first, then each Range bound and File marker."""
    base, *markers = typing.get_args(annotation)
    try:
        value = check(value, base, base_dir=base_dir, must_exist=must_exist)
    except Invalid as error:
        if error.key or not any(isinstance(m, Range) for m in markers):
            raise
        raise Invalid(f"expected {describe(annotation)}, got {_show(value)}") from None
    for marker in markers:
        if isinstance(marker, Range) and value is not None and (bad := marker.violation(value)):
            raise Invalid(f"expected {describe(annotation)}, got {value!r} (must be {bad})")
        if isinstance(marker, FileMarker):
            value = _check_path(value, marker, base_dir, must_exist)
    return value


def _check_union(value, annotation, base_dir, must_exist):
    """``X | Y | None``: the first member the value fits; with one member, that member's own message."""
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return check(value, arg, base_dir=base_dir, must_exist=must_exist)
        except Invalid as error:
            last = error
    if len([a for a in args if a is not type(None)]) == 1:
        raise last
    raise Invalid(f"expected {describe(annotation)}, got {_show(value)}")


def _check_scalar(value, annotation):
    """bool, int, float or str, strictly: a boolean is no integer, and an integer is a float."""
    if annotation is float:
        # TOML writes 3 for 3.0; accept integers where numbers are expected.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan passes every bound; no option means infinity
                raise Invalid(f"expected {describe(annotation)}, got {value!r} (must be finite)")
            return float(value)
        return _MISFIT
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISFIT
    return value if isinstance(value, annotation) else _MISFIT


def _check_container(value, origin, args, base_dir, must_exist):
    """A list or a table, each item checked against its annotation (errors name the item)."""
    if origin is list and isinstance(value, list):
        return [_check_item(v, args[0] if args else Any, f"[{i}]", base_dir, must_exist) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        inner = args[1] if args else Any
        return {k: _check_item(v, inner, f".{k}", base_dir, must_exist) for k, v in value.items()}
    return _MISFIT


def _check_item(value, annotation, key, base_dir, must_exist=True):
    try:
        return check(value, annotation, base_dir=base_dir, must_exist=must_exist)
    except Invalid as error:
        raise Invalid(error.message, key + error.key) from None


def check_table(value: dict, cls, *, base_dir: Path | None = None, must_exist: bool = True):
    """Bind a TOML table to a dataclass; the first problem found is raised with its key."""
    from stancerun.errors import did_you_mean

    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    for key in value:
        if key not in fields:
            raise Invalid("unknown key" + (f"; {hint}" if (hint := did_you_mean(key, fields)) else ""), f".{key}")
    bound = {k: _check_item(v, hints[k], f".{k}", base_dir, must_exist) for k, v in value.items()}
    missing = [f.name for f in fields.values() if f.name not in bound
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise Invalid(f"missing required key (expected {describe(hints[missing[0]])})", f".{missing[0]}")
    return cls(**bound)


def _check_path(value, marker: FileMarker, base_dir: Path | None, must_exist: bool = True):
    if value is None:
        return None
    try:
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        path = path.resolve()
        exists = path.is_dir() if marker.directory else path.is_file()
    except (ValueError, OSError) as error:  # a NUL character, a name the OS refuses
        raise Invalid(f"not a usable path: {error}") from None
    if must_exist and not exists:
        raise Invalid(f"{'directory' if marker.directory else 'file'} not found: {path}")
    return str(path)


def to_plain(value):
    """Dataclass instances back to TOML-ready dicts (for the resolved experiment)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
