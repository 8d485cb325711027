"""The plan of a sweep: which combinations of values a `[sweep]` table asks for, and the
experiment config of each. Pure data in, data out; it imports nothing from stancerun, so
config.py (which validates every combination) and sweep.py (which runs them) can both use it.
"""

from __future__ import annotations

import copy
import itertools
import random

SETTINGS = {"mode", "trials", "seed"}


def settings(table: dict) -> tuple[str, int, int, dict[str, list]]:
    """(mode, trials, seed, {dotted key: values}) of a validated [sweep] table."""
    params = {k: v for k, v in table.items() if k not in SETTINGS}
    return table.get("mode", "grid"), table.get("trials", 0), table.get("seed", 0), params


def combinations(table: dict) -> list[dict]:
    mode, trials, seed, params = settings(table)
    grid = [dict(zip(params, values)) for values in itertools.product(*params.values())]
    if mode == "random":
        grid = random.Random(seed).sample(grid, min(trials, len(grid)))
    return grid


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


def child_configs(config: dict) -> list[tuple[str, dict, dict]]:
    """(run name, params, config) per combination of ``config["sweep"]``: the parent's config
    with the values set and no [sweep] table, not yet validated."""
    children = []
    for i, params in enumerate(combinations(config["sweep"]), 1):
        name = f"run-{i:02d}"
        child = copy.deepcopy(config)
        del child["sweep"]
        child["name"] = f"{config['name']}-{name}"
        for key, value in params.items():
            set_dotted(child, key, value)
        children.append((name, params, child))
    return children
