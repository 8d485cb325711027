"""The names of the files in a run directory, an ONNX export and a sweep directory, and which
of the three a folder is. Torch-free.

The names are the on-disk contract (SPEC section 5, README's run directory); code asks for
them here instead of spelling them out.
"""

from __future__ import annotations

import json
from pathlib import Path

from stancerun.errors import UsageError

# -- a run directory (the parent of repeats and of a learning curve holds some of these too) --
CONFIG = "config.toml"  # the resolved experiment
ENVIRONMENT = "environment.json"  # versions, device, data fingerprints
METRICS = "metrics.jsonl"  # one line per log or evaluation
RESULTS = "results.json"  # stancerun.rundir.results.Results
PREDICTIONS = "predictions.csv"  # the validation split with what the model said
MISCLASSIFIED = "misclassified.jsonl"  # every mistake, most confident first
REPORT = "report.md"
PLOTS = "plots"
MODEL = "model"  # the weights, tokenizer and MODEL_INFO
MODEL_INFO = "stancerun.json"  # label map and how to rebuild the model, beside the weights
CHECKPOINTS = "checkpoints"  # what `stancerun resume` needs
STATUS = "status.json"  # running, finished, interrupted, failed or pruned
EVALUATIONS = "evaluations"  # `stancerun evaluate`'s outputs, one folder each
SUMMARY = "summary.json"  # repeats' and a learning curve's figures over their runs

# -- a sweep directory ---------------------------------------------------------------------
SWEEP_PLAN = "sweep.json"  # which study, in which storage: written last, so it means "ready"
JOURNAL = "journal.log"  # the study's storage when no database is named
TRIALS = "trials.json"
LEADERBOARD = "leaderboard.json"
BEST = "best.toml"  # the best trial's experiment, runnable as it is

# -- an ONNX export ------------------------------------------------------------------------
ONNX_FORMAT = "onnx"  # MODEL_INFO's "format" in an export
ONNX_MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"  # the Rust tokenizer an export runs with (as save_pretrained names it)


class RunDir:
    """A folder stancerun wrote: its files by name, and which kind of folder it is."""

    RUN, ONNX, SWEEP = "run directory", "ONNX export", "sweep directory"

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config = property(lambda self: self.path / CONFIG)
    environment = property(lambda self: self.path / ENVIRONMENT)
    metrics = property(lambda self: self.path / METRICS)
    results = property(lambda self: self.path / RESULTS)
    predictions = property(lambda self: self.path / PREDICTIONS)
    misclassified = property(lambda self: self.path / MISCLASSIFIED)
    report = property(lambda self: self.path / REPORT)
    plots = property(lambda self: self.path / PLOTS)
    model = property(lambda self: self.path / MODEL)
    model_info = property(lambda self: self.path / MODEL / MODEL_INFO)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    status = property(lambda self: self.path / STATUS)
    evaluations = property(lambda self: self.path / EVALUATIONS)
    summary = property(lambda self: self.path / SUMMARY)
    sweep_plan = property(lambda self: self.path / SWEEP_PLAN)
    trials = property(lambda self: self.path / TRIALS)
    leaderboard = property(lambda self: self.path / LEADERBOARD)
    best = property(lambda self: self.path / BEST)
    onnx_model = property(lambda self: self.path / ONNX_MODEL)
    tokenizer = property(lambda self: self.path / TOKENIZER)

    def read_results(self):
        """results.json as :class:`stancerun.rundir.results.Results`; a garbled one is a UsageError
        naming it (a missing one stays FileNotFoundError: callers say why it is missing)."""
        from stancerun.rundir.results import Results

        data = read_json(self.results, "a JSON object (the run's results)")
        try:
            return Results.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UsageError(f"{self.results}: garbled ({type(error).__name__}: {error}); expected the run's "
                             "results as stancerun wrote them") from None

    def read_config(self) -> dict:
        """config.toml, the run's resolved experiment; garbled is a UsageError naming it."""
        from stancerun.config import tomlio

        text = self.config.read_text(encoding="utf-8")
        try:
            return tomlio.loads(text)
        except ValueError as error:  # tomllib.TOMLDecodeError
            raise UsageError(f"{self.config}: not valid TOML ({error}); expected the run's resolved experiment") from None

    @property
    def kind(self) -> str | None:
        """RUN, ONNX or SWEEP; None for a folder that is none of them.

        An ONNX export holds MODEL_INFO with format "onnx" at its top; a sweep directory its
        SWEEP_PLAN; a run directory its model/ (once finished) or, from its start, config.toml
        beside environment.json."""
        if _format(self.path / MODEL_INFO) == ONNX_FORMAT:
            return self.ONNX
        if self.sweep_plan.is_file():
            return self.SWEEP
        if self.model.is_dir() or (self.config.is_file() and self.environment.is_file()):
            return self.RUN
        return None

    @classmethod
    def open(cls, path, *kinds: str) -> "RunDir":
        """``path`` when it is one of ``kinds`` (any of the three when none is named); otherwise
        one UsageError that says what it is, or what each kind would hold."""
        found = cls(path)
        kind = found.kind
        wanted = kinds or (cls.RUN, cls.ONNX, cls.SWEEP)
        if kind in wanted:
            return found
        expected = " or ".join(_a(k) for k in wanted)
        if kind is not None:
            raise UsageError(f"{path}: {_a(kind)}, not {expected}")
        if not found.path.is_dir():
            raise UsageError(f"{path}: no such directory (expected {expected})")
        raise UsageError(f"{path}: not {expected} (" + "; ".join(HOLDS[k] for k in wanted) + ")")


#: What each kind holds, for the message about a folder that is none of them.
HOLDS = {RunDir.RUN: f"a run directory holds {MODEL}/ or {CONFIG} with {ENVIRONMENT}",
         RunDir.ONNX: f"an ONNX export holds {MODEL_INFO} with format \"{ONNX_FORMAT}\" (stancerun export --onnx)",
         RunDir.SWEEP: f"a sweep directory holds {SWEEP_PLAN}"}


def read_json(path: Path, expected: str):
    """A JSON object stancerun wrote, or one UsageError that names the file and what was expected.
    A missing file stays FileNotFoundError, so a caller can say why it is missing."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not text; expected {expected}") from None
    except ValueError as error:  # json.JSONDecodeError
        raise UsageError(f"{path}: not valid JSON ({error}); expected {expected}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a JSON {type(data).__name__}, expected {expected}")
    return data


def _a(kind: str) -> str:
    return ("an " if kind[0] in "AEIOU" else "a ") + kind


def _format(info: Path) -> str | None:
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None
