"""Errors are values with a location until the CLI turns them into a message and an exit code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class StancerunError(Exception):
    """A failure the user can act on; printed without a traceback."""

    exit_code = 1


class UsageError(StancerunError):
    """The experiment, its data or the command line is wrong (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    file: str  # where the offending key was written ("--set" for overrides)
    key: str  # dotted key path, e.g. "training.learning_rate" or "metrics[1].use"
    message: str  # what is wrong and what was expected
    hint: str | None = None  # "did you mean ...?"

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class DataError(UsageError):
    """Every problem found in a data set's rows, reported in one go (each names its file and row)."""

    #: More lines than this are summarised: one bad column can make every row wrong.
    SHOWN = 10

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = self.problems[: self.SHOWN]
        if len(self.problems) > self.SHOWN:
            lines.append(f"... and {len(self.problems) - self.SHOWN} more")
        super().__init__("\n".join(lines))


class ConfigError(UsageError):
    """Every problem found in an experiment, reported in one go."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{self.source or 'experiment'}: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def did_you_mean(word: str, candidates) -> str | None:
    """A 'did you mean' hint for the closest candidate, if one is close enough."""
    import difflib

    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


#: Where a key set on the command line came from, in place of a file name.
SET_ORIGIN = "--set"


def show_file(path: str | Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    if str(path) == SET_ORIGIN:
        return SET_ORIGIN
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


class RunPruned(Exception):
    """A run stopped on purpose before its end (a sweep's pruner judged its curve worse than the
    others'): its run directory is kept and its status.json says "pruned", not "failed"."""

    run_status = "pruned"


class TrialTaken(Exception):
    """A sweep trial stopped because another worker judged its worker gone, failed it and queued it
    again: its result could no longer be recorded. Its status.json says "taken"."""

    run_status = "taken"
