"""The plan of a sweep: what a `[sweep]` table asks for, the points every combination is
validated at, and the experiment config of one trial. Pure data in, data out; it imports
nothing from stancerun (nor Optuna), so config.py (which validates the table and its points)
and sweep.py (which runs the trials on Optuna) can both use it.

    [sweep]
    sampler = "tpe"                 # grid | random | tpe
    trials = 8
    pruner = "median"               # median | hyperband | none
    "adapter.r" = [4, 8, 16]        # a list: one of these values
    "training.learning_rate" = { low = 1e-5, high = 1e-3, log = true }   # a range (random, tpe)
"""

from __future__ import annotations

import copy
import itertools
import json

# The keys of [sweep] that are settings, not parameters, with their defaults.
DEFAULTS = {"sampler": "grid", "trials": 0, "seed": 0, "pruner": "none", "startup_trials": 2, "pruner_warmup": 0,
            "storage": None}
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "none")
RANGE_KEYS = {"low", "high", "log", "step"}
# Optuna's categorical choices must be None, bool, int, float or str; other values (lists,
# tables) travel as their JSON text and are decoded when the trial's config is built.
SCALARS = (type(None), bool, int, float, str)


def settings(table: dict) -> dict:
    """The settings of a validated [sweep] table, defaults filled in."""
    return {key: table.get(key, default) for key, default in DEFAULTS.items()}


def parameters(table: dict) -> dict[str, list | dict]:
    """{dotted key: list of values or range table} of a [sweep] table."""
    return {k: v for k, v in table.items() if k not in DEFAULTS and k != "mode"}


def is_range(values) -> bool:
    return isinstance(values, dict)


def range_kind(spec: dict) -> str:
    """"int" when low, high (and step) are integers, else "float"."""
    numbers = [spec.get("low"), spec.get("high")] + ([spec["step"]] if spec.get("step") is not None else [])
    return "int" if all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) else "float"


def range_problems(spec: dict) -> list[str]:
    """What is wrong with a range table {low, high, log?, step?}: empty when nothing is."""
    unknown = set(spec) - RANGE_KEYS
    if unknown:
        return [f"unknown key(s) {', '.join(sorted(unknown))} in a range; expected low, high and optionally log, step"]
    low, high = spec.get("low"), spec.get("high")
    if any(not isinstance(n, (int, float)) or isinstance(n, bool) for n in (low, high)):
        return [f"a range needs numbers low and high, got low = {low!r}, high = {high!r}"]
    problems = []
    if not low < high:
        problems.append(f"a range needs low < high, got low = {low!r}, high = {high!r}")
    if not isinstance(spec.get("log", False), bool):
        problems.append(f"log: expected true or false, got {spec['log']!r}")
    elif spec.get("log") and low <= 0:
        problems.append(f"a log range needs low > 0, got low = {low!r}")
    step = spec.get("step")
    if step is not None:
        if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
            problems.append(f"step: expected a number > 0, got {step!r}")
        elif spec.get("log"):
            problems.append("a range takes log = true or a step, not both")
    return problems


def encode(value):
    """A list value as one Optuna categorical choice."""
    return value if isinstance(value, SCALARS) else json.dumps(value)


def decode(value, choices: list):
    """The list value a categorical choice stands for."""
    for choice in choices:
        if encode(choice) == value:
            return choice
    return value


def grid(table: dict) -> list[dict]:
    """Every combination of the list values, in the order the keys and values are written."""
    params = parameters(table)
    return [dict(zip(params, values)) for values in itertools.product(*params.values())]


def validation_points(table: dict) -> list[dict]:
    """The points every one of which must give a valid experiment before the first trial: each
    combination of the list values with each end of every range."""
    params = parameters(table)
    options = [[spec["low"], spec["high"]] if is_range(spec) else spec for spec in params.values()]
    return [dict(zip(params, values)) for values in itertools.product(*options)]


def set_dotted(config: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    target = config
    try:
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    except (ValueError, TypeError, IndexError, AttributeError):
        # e.g. "metrics.use" (a list needs a position), "seed.x" (seed is a number), "metrics.9.use"
        raise ValueError(f"'{key}' does not lead to a key of this experiment") from None


def child_config(config: dict, params: dict, name: str) -> dict:
    """The experiment of one trial: the sweep's config with ``params`` set, named
    ``{sweep name}-{name}``, without its [sweep] table; not yet validated."""
    child = copy.deepcopy(config)
    child.pop("sweep", None)
    child["name"] = f"{config['name']}-{name}"
    for key, value in params.items():
        set_dotted(child, key, value)
    return child


def shown(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
