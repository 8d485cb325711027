"""Experiment files: TOML -> a resolved, validated :class:`Experiment`.

Resolution: read the file and its ``extends`` chain (deep merge, this file wins), apply
``--set`` overrides, then validate everything at once against the fixed schema
(:mod:`stancerun.config.schema`) and the signatures of the factories each ``use`` names. Every
problem is collected with the file and key path that caused it; nothing here imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stancerun.config import sweepplan
from stancerun.config import tomlio
from stancerun.data.rows import read_text
from stancerun.errors import SET_ORIGIN, ConfigError, Problem, UsageError, did_you_mean, show_file
from stancerun.options import Invalid, UnsupportedAnnotation, check, describe, to_plain, unsupported
from stancerun.registry.table import NOUNS, Registry
from stancerun.config.schema import (COMPONENT_SECTIONS, CORE_OPTIONS, EnsembleConfig, EvaluationConfig, TopLevel, TrainingConfig,
                              baseline_rows)

KeyPath = tuple  # of str (table keys) and int (list positions)


def show_key(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Origins:
    """Which file wrote each key, so a problem can name the file that caused it."""

    def __init__(self, mapping: dict[KeyPath, str] | None = None):
        self.mapping = dict(mapping or {})

    @classmethod
    def of(cls, data, origin: str, prefix: KeyPath = ()) -> "Origins":
        found = cls({prefix: origin} if prefix else {})
        if isinstance(data, dict):
            for key, value in data.items():
                found.mapping.update(cls.of(value, origin, prefix + (key,)).mapping)
        elif isinstance(data, list):
            for i, value in enumerate(data):
                found.mapping.update(cls.of(value, origin, prefix + (i,)).mapping)
        return found

    def drop(self, prefix: KeyPath) -> None:
        for key in [k for k in self.mapping if k[: len(prefix)] == prefix]:
            del self.mapping[key]

    def file(self, path: KeyPath, default: str) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in self.mapping:
                return self.mapping[path[:end]]
        return default


def merge(base: dict, over: dict, origins: Origins, over_origins: Origins, prefix: KeyPath = ()) -> dict:
    """Deep-merge ``over`` into a copy of ``base``: tables merge key by key, anything else
    (lists included) is replaced. A component table whose ``use`` changes is replaced whole:
    the old component's options mean nothing to the new one."""
    result = copy.deepcopy(base)
    for key, value in over.items():
        path = prefix + (key,)
        old = result.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("use", value.get("use")) == value.get("use", old.get("use")):
            result[key] = merge(old, value, origins, over_origins, path)
        else:
            origins.drop(path)
            result[key] = copy.deepcopy(value)
    if not prefix:
        origins.mapping.update(over_origins.mapping)
    return result


def read_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, Origins]:
    """One experiment file with its ``extends`` chain merged in."""
    shown = show_file(path)
    try:
        text = read_text(path)
    except UsageError as error:  # not UTF-8: the line and bytes, said by read_text
        raise ConfigError([Problem(shown, "", str(error).removeprefix(f"{shown}, "))], shown) from None
    except FileNotFoundError:
        where = f" (extended by {show_file(chain[-1])})" if chain else ""
        raise ConfigError([Problem(shown, "", f"experiment file not found{where}")], shown) from None
    except OSError as error:
        raise ConfigError([Problem(shown, "", f"cannot read: {error.strerror}")], shown) from None
    try:
        data = tomlio.loads(text)
    except (tomlio.TOMLDecodeError, ValueError, RecursionError) as error:  # ValueError: e.g. a 5,000-digit number
        raise ConfigError([Problem(shown, "", f"not valid TOML: {error}")], shown) from None
    origins = Origins.of(data, str(path))
    parent = data.pop("extends", None)
    if parent is None:
        return data, origins
    if not isinstance(parent, str):
        raise ConfigError([Problem(shown, "extends", f"expected a path to another experiment file, got {parent!r}")], shown)
    try:
        parent_path = (path.parent / parent).resolve()
    except (ValueError, OSError) as error:  # a NUL character, a name the OS refuses
        raise ConfigError([Problem(shown, "extends", f"not a usable path: {error}")], shown) from None
    if parent_path in chain + (path,):
        cycle = " -> ".join(show_file(p) for p in chain + (path, parent_path))
        raise ConfigError([Problem(shown, "extends", f"extends cycle: {cycle}")], shown)
    base, base_origins = read_file(parent_path, chain + (path,))
    return merge(base, data, base_origins, origins), base_origins


def apply_overrides(data: dict, origins: Origins, overrides: list[str]) -> tuple[dict, list[Problem]]:
    """``--set dotted.key=TOML value``; a value that is not TOML is taken as a plain string
    (so ``--set model.name=distilbert-base-uncased`` works unquoted)."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(SET_ORIGIN, item, "expected KEY=VALUE, e.g. training.learning_rate=1e-4"))
            continue
        try:
            value = tomlio.parse_value(raw)
        except tomlio.TOMLDecodeError:
            value = raw
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        nested = value
        for part in reversed(path):
            if isinstance(part, int):
                nested = None
                break
            nested = {part: nested}
        if nested is not None:
            data = merge(data, nested, origins, Origins.of(nested, SET_ORIGIN))
            continue
        # A list position (metrics.0.use): walk to it and set in place.
        target = data
        try:
            for part in path[:-1]:
                target = target[part]
            if path[-1] == "use" and isinstance(target, dict) and target.get("use") != value:
                target.clear()  # another component: the old one's options mean nothing to it
                origins.drop(path[:-1])
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            problems.append(Problem(SET_ORIGIN, show_key(path), "no such key or list position to set"))
            continue
        origins.drop(path)
        origins.mapping[path] = SET_ORIGIN
    return data, problems


def options_schema(target) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """name -> (annotation, default or inspect.Parameter.empty) for a dataclass or a factory,
    and whether it takes arbitrary extra options (``**kwargs``)."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        schema = {}
        for f in dataclasses.fields(target):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty
            schema[f.name] = (hints[f.name], default)
        return schema, False
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: check nothing for it
        hints = {}
    schema, extra = {}, False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra = True
        elif param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
            schema[param.name] = (hints.get(param.name, Any), param.default)
    return schema, extra


REQUIRED = inspect.Parameter.empty  # the "default" of an option without one


def option_rows(target) -> tuple[list[tuple[str, str, Any]], bool]:
    """(name, what it expects in words, default or :data:`REQUIRED`) per option, read by
    :func:`options_schema` as validation reads them, and whether other keys are taken too; for
    ``stancerun plugins --verbose``. Defaults are shown as ``validate`` writes them."""
    schema, extra = options_schema(target)
    for name, (annotation, _) in schema.items():
        if (bad := unsupported(annotation)) is not None:
            raise UnsupportedAnnotation(bad, name)
    rows = [(name, describe(annotation), default if default is REQUIRED else to_plain(default))
            for name, (annotation, default) in schema.items()]
    return rows, extra


#: Parameter names that say a function takes the prediction: a metric, not the factory of one.
PREDICTION_NAMES = ("pred", "preds", "prediction", "predictions", "eval_pred", "eval_prediction", "p")


def factory_problem(kind: str, component) -> str | None:
    """Why a registered factory cannot be configured at all, said as the plugin's mistake (None
    when it can): a metric registered in place of its factory, or an option annotated with a type
    the options cannot be checked against."""
    who = f"{NOUNS[kind]} '{component.name}' of plugin '{component.plugin}'"
    try:
        schema, _ = options_schema(component.factory)
        parameters = inspect.signature(component.factory).parameters.values()
    except (TypeError, ValueError):  # a signature that cannot be read: nothing to judge by
        return None
    required = [p for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if kind == "metrics" and len(required) == 1 and required[0].kind is not required[0].KEYWORD_ONLY:
        annotation = schema.get(required[0].name, (Any,))[0]
        if required[0].name in PREDICTION_NAMES or "EvalPrediction" in str(annotation):
            return (f"{who} takes '{required[0].name}', a prediction: it is the metric itself. Register the "
                    "factory that returns the metric, not the metric itself (def factory(**options): ... return "
                    "compute)")
    for name, (annotation, _) in schema.items():
        if (bad := unsupported(annotation)) is not None:
            return f"{who} cannot be configured: {UnsupportedAnnotation(bad, name)}"
    return None


class Validator:
    """Collects every problem of one experiment instead of stopping at the first."""

    def __init__(self, origins: Origins, source: Path):
        self.origins = origins
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: KeyPath, message: str, hint: str | None = None, suffix: str = "") -> None:
        """Record a problem at ``path`` (``suffix``: a key path inside the value, like "[1]")."""
        origin = show_file(self.origins.file(path, str(self.source)))
        self.problems.append(Problem(origin, show_key(path) + suffix, message, hint))

    def bind(self, table: dict, target, path: KeyPath, what: str = "key") -> dict:
        """Check a table against a schema; return it with defaults filled in."""
        schema, extra = options_schema(target)
        resolved = {}
        for key, value in table.items():
            if key not in schema:
                if extra:
                    resolved[key] = value
                    continue
                self.add(path + (key,), f"unknown {what}", did_you_mean(key, schema) or self._accepted(schema))
                continue
            origin = self.origins.file(path + (key,), str(self.source))
            base_dir = Path.cwd() if origin == SET_ORIGIN else Path(origin).parent
            try:
                resolved[key] = to_plain(check(value, schema[key][0], base_dir=base_dir))
            except Invalid as error:
                self.add(path + (key,), error.message, suffix=error.key)
        for name, (annotation, default) in schema.items():
            if name in resolved or any(p.key == show_key(path + (name,)) for p in self.problems):
                continue
            if default is inspect.Parameter.empty:
                self.add(path + (name,), f"missing required {what} (expected {describe(annotation)})")
            else:
                resolved[name] = to_plain(default)
        order = list(schema) + [k for k in resolved if k not in schema]
        return {k: resolved[k] for k in order if k in resolved}

    @staticmethod
    def _accepted(schema) -> str:
        return f"accepted: {', '.join(schema)}" if schema else "this component takes no options"

    def component(self, table, section: str, kind: str, registry: Registry, path: KeyPath) -> dict | None:
        if not isinstance(table, dict):
            self.add(path, f"expected a table with use = \"<{NOUNS[kind]} name>\", got {table!r}")
            return None
        name = table.get("use")
        if not isinstance(name, str):
            self.add(path + ("use",), f"missing: say which {NOUNS[kind]} to use (one of {', '.join(registry.names(kind))})")
            return None
        if name not in registry.components[kind]:
            self.add(path + ("use",), registry.unknown_message(kind, name), registry.suggest(kind, name))
            return None
        factory = registry.components[kind][name].factory
        problem = factory_problem(kind, registry.components[kind][name])
        if problem:  # the plugin's mistake: one line for it, not one per option it confuses
            self.add(path + ("use",), problem)
            return None
        core = CORE_OPTIONS.get(section, {})
        options = {k: v for k, v in table.items() if k != "use" and k not in core}
        resolved = {"use": name, **self.bind(options, factory, path, what=f"option of {NOUNS[kind]} '{name}'")}
        for key, (annotation, default) in core.items():
            try:
                resolved[key] = check(table.get(key, default), annotation)
            except Invalid as error:
                self.add(path + (key,), error.message)
        return resolved


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment: every default filled in, every path absolute."""

    path: Path
    config: dict

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def training(self) -> TrainingConfig:
        return TrainingConfig(**self.config["training"])

    @property
    def evaluation(self) -> EvaluationConfig:
        return EvaluationConfig(**self.config["evaluation"])

    @property
    def ensemble(self) -> EnsembleConfig:
        return EnsembleConfig(**self.config.get("ensemble", {}))

    def to_toml(self) -> str:
        return tomlio.dumps(self.config)


#: The tables whose keys are fixed by a dataclass (the component tables take their plugin's options).
FIXED_SECTIONS = {"training": TrainingConfig, "evaluation": EvaluationConfig, "ensemble": EnsembleConfig}


def validate(data: dict, origins: Origins, source: Path, registry: Registry) -> Experiment:
    """Check a merged experiment; raise :class:`ConfigError` with every problem found."""
    v = Validator(origins, source)
    config = check_top_level(v, data, source)
    check_components(v, data, config, registry)
    check_fixed_sections(v, data, config, registry)
    check_stack(v, config)
    headline = config.get("evaluation", {}).get("headline")
    given = data.get("training") if isinstance(data.get("training"), dict) else {}
    if headline and "metric_for_best_model" not in given and "training" in config:
        config["training"]["metric_for_best_model"] = headline  # the headline picks the model too

    if "sweep" in data:
        config["sweep"] = check_sweep(v, data["sweep"])
    if v.problems:
        raise ConfigError(v.problems, show_file(source))
    order = ["name", "description", "seed", "output_dir", "data", "model", "adapter", "training", "evaluation", "ensemble",
             "metrics", "callbacks", "sweep"]
    experiment = Experiment(source, {k: config[k] for k in order if k in config})
    if "sweep" in experiment.config:
        child_experiments(experiment, registry)  # every combination must validate before anything runs
    return experiment


def check_top_level(v: Validator, data: dict, source: Path) -> dict:
    """The config's top-level keys (name, seed, ...), with every unknown key a problem."""
    known = [f.name for f in dataclasses.fields(TopLevel)] + list(FIXED_SECTIONS) + list(COMPONENT_SECTIONS) + ["sweep"]
    top = {}
    for key in data:
        if key not in known:
            v.add((key,), "unknown key", did_you_mean(key, known) or f"accepted: {', '.join(known)}")
        elif key not in (*FIXED_SECTIONS, *COMPONENT_SECTIONS, "sweep"):
            top[key] = data[key]
    config = v.bind(top, TopLevel, ())
    if config.get("name") is None:
        config["name"] = source.stem
    return config


def check_components(v: Validator, data: dict, config: dict, registry: Registry) -> None:
    """Each component table ([data], [model], [[metrics]], ...) into ``config``, checked against its plugin."""
    for section, (kind, is_list, default) in COMPONENT_SECTIONS.items():
        value = data.get(section, copy.deepcopy(default))
        if isinstance(value, dict) and "use" not in value and isinstance(default, dict):
            value = {**default, **value}  # [model] name = "..." alone keeps the default model kind
        if value is None:
            v.add((section,), f"missing table [{section}] with use = \"<{NOUNS[kind]} name>\"")
        elif is_list:
            if not isinstance(value, list):
                v.add((section,), f"expected an array of tables ([[{section}]]), got {value!r}")
                continue
            config[section] = [v.component(item, section, kind, registry, (section, i)) for i, item in enumerate(value)]
        else:
            config[section] = v.component(value, section, kind, registry, (section,))


def check_fixed_sections(v: Validator, data: dict, config: dict, registry: Registry) -> None:
    """[training], [evaluation] and [ensemble] into ``config``: their keys, then how they fit together."""
    for section, schema in FIXED_SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            v.add((section,), f"expected a table, got {table!r}")
            continue
        config[section] = v.bind(table, schema, (section,))
        if section == "evaluation" and isinstance(config[section].get("baselines"), list):
            config[section]["baselines"] = check_baselines(v, config[section]["baselines"], registry)
        if not any(p.key.startswith(f"{section}.") for p in v.problems):
            for key, message in schema(**config[section]).problems():
                v.add((section, key), message)


def check_stack(v: Validator, config: dict) -> None:
    """Every name in [ensemble] stack is one of [evaluation] baselines."""
    if isinstance(config.get("ensemble"), dict) and isinstance(config.get("evaluation", {}).get("baselines"), list):
        rows = baseline_rows(config["evaluation"]["baselines"])
        for i, name in enumerate(config["ensemble"].get("stack", [])):
            if name not in rows:
                v.add(("ensemble", "stack", i), f"'{name}' is not one of [evaluation] baselines ({', '.join(rows) or 'none'})",
                      did_you_mean(name, list(rows)))


def child_experiments(experiment: Experiment, registry: Registry) -> list[tuple[str, dict, Experiment]]:
    """(label, params, validated experiment) per point a sweep must be valid at (every combination
    of its lists with each end of its ranges); every problem of every point at once."""
    shown = show_file(experiment.path)
    children, problems = [], []
    for i, params in enumerate(sweepplan.validation_points(experiment.config["sweep"]), 1):
        label = f"point {i} ({sweepplan.shown(params)})"
        try:
            config = sweepplan.child_config(experiment.config, params, f"point-{i}")
        except ValueError as error:
            raise ConfigError([Problem(shown, "sweep", str(error))], shown) from None
        try:
            children.append((label, params, validate(config, Origins(), experiment.path, registry)))
        except ConfigError as error:
            problems += [dataclasses.replace(p, key=f"sweep {label} {p.key}") for p in error.problems]
    if problems:
        raise ConfigError(problems, str(experiment.path))
    return children


def check_baselines(v: Validator, entries: list, registry: Registry) -> list:
    """[evaluation] baselines: each a registered name (its default options) or a table
    {use = "name", ...}; a name keeps its short form in the resolved experiment."""
    resolved = []
    for i, entry in enumerate(entries):
        path = ("evaluation", "baselines", i)
        table = v.component({"use": entry} if isinstance(entry, str) else entry, "baselines", "baselines", registry, path)
        if table is not None:
            resolved.append(entry if isinstance(entry, str) else table)
    return resolved


def check_sweep(v: Validator, table) -> dict:
    """[sweep]: settings plus "dotted.key" = [values] or {low, high, log, step}; each point the
    sweep can reach is validated afterwards (``child_experiments``)."""
    if not isinstance(table, dict):
        v.add(("sweep",), f"expected a table of \"dotted.key\" = [values], got {table!r}")
        return {}
    table = dict(table)
    if "mode" in table:  # the setting's name before sweeps ran on Optuna
        table.setdefault("sampler", table.pop("mode"))
    annotations = {"sampler": Literal[sweepplan.SAMPLERS], "trials": int, "seed": int,
                   "pruner": Literal[sweepplan.PRUNERS], "startup_trials": int, "pruner_warmup": int,
                   "storage": typing.Optional[str]}
    resolved = {}
    for key, default in sweepplan.DEFAULTS.items():
        try:
            resolved[key] = check(table.get(key, default), annotations[key])
        except Invalid as error:
            v.add(("sweep", key), error.message)
    params = sweepplan.parameters(table)
    if not params:
        v.add(("sweep",), "no parameters to sweep: add \"dotted.key\" = [values], e.g. \"adapter.r\" = [4, 8]")
    sampler = resolved.get("sampler")
    for key, values in params.items():
        if key.split(".")[0] not in COMPONENT_SECTIONS and key.split(".")[0] not in ("training", "evaluation", "ensemble", "seed"):
            v.add(("sweep", key), "expected a dotted key into [data], [model], [adapter], [training], [evaluation], "
                                  "[ensemble] or seed")
        elif sweepplan.is_range(values):
            for message in sweepplan.range_problems(values):
                v.add(("sweep", key), message)
            if sampler == "grid":
                v.add(("sweep", key), "a range needs sampler = \"tpe\" or \"random\"; the grid takes a list of values")
        elif not isinstance(values, list) or not values:
            v.add(("sweep", key), f"expected a non-empty list of values or a range {{ low = ..., high = ... }}, got {values!r}")
    if sampler in ("random", "tpe") and resolved.get("trials", 0) < 1:
        v.add(("sweep", "trials"), f"sampler = \"{sampler}\" needs trials >= 1 (how many trials to run)")
    if sampler == "grid" and resolved.get("trials"):
        v.add(("sweep", "trials"), "the grid runs every combination once: leave trials out, or use sampler = \"random\"")
    for key in ("startup_trials", "pruner_warmup"):
        if isinstance(resolved.get(key), int) and resolved[key] < 0:
            v.add(("sweep", key), "expected an integer >= 0")
    storage = resolved.get("storage")
    if storage is not None and "://" not in storage:
        v.add(("sweep", "storage"), f"expected a database URL such as \"postgresql+psycopg2://user@host/db\", got {storage!r} "
                                    "(leave storage out for a journal file in the sweep directory)")
    return {**{k: resolved[k] for k in sweepplan.DEFAULTS if k in resolved and resolved[k] is not None}, **params}


def load_experiment(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> Experiment:
    """Read, merge, override and validate an experiment file."""
    if registry is None:
        from stancerun.registry.discovery import get_registry

        registry = get_registry()
    source = Path(path).resolve()
    data, origins = read_file(source)
    data, problems = apply_overrides(data, origins, list(overrides))
    try:
        experiment = validate(data, origins, source, registry)
    except ConfigError as error:
        raise ConfigError(problems + error.problems, show_file(source)) from None
    if problems:
        raise ConfigError(problems, show_file(source))
    return experiment


def build(registry: Registry, kind: str, table: dict, *, files_must_exist: bool = True):
    """Call the factory a resolved table names, with its options in their annotated types, and
    check that what it returns keeps its contract (:mod:`stancerun.contracts`)."""
    from stancerun.contracts import conforms

    component = registry.get(kind, table["use"])
    problem = factory_problem(kind, component)
    if problem:
        raise UsageError(problem)
    schema, _ = options_schema(component.factory)
    options = {}
    core = CORE_OPTIONS.get({"datasets": "data"}.get(kind, kind), {})
    for key, value in table.items():
        if key == "use" or key in core:
            continue
        options[key] = (check(value, schema[key][0], must_exist=files_must_exist)
                        if key in schema and value is not None else value)
    built = component.factory(**options)
    missing = conforms(kind, built)
    if missing:
        raise UsageError(f"{NOUNS[kind]} '{component.name}' of plugin '{component.plugin}' breaks its contract: "
                         f"its factory returned {type(built).__name__!r} without {', '.join(m + '()' for m in missing)} "
                         f"(see stancerun.{NOUNS[kind].capitalize()})")
    return built
