"""What results.json holds, as dataclasses: written by a run, read by report, compare, sweeps,
repeats, learning curves, export and serve. Torch-free.

The file's keys and shapes are the run directory's contract (SPEC section 5); these classes only
give them names. Sections with fixed keys are records; mappings keyed by data (metric, baseline,
split, group or label names) stay dicts, as do the interval and difference figures the statistics
produce (``{"value", "low", "high"}``, ``{"difference", "low", "high", "p", "significant"}``).

``format_version`` 2 is the first that says so; a file without it is version 1, the same shape.
A key a record does not know (a newer writer's) is kept in its ``extra`` and written back, so
reading an old or newer run directory and writing it again loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

FORMAT_VERSION = 2

#: Field metadata of a section that a file may leave out: None is then not written at all.
OPTIONAL = {"optional": True}


def optional(**kwargs):
    return field(default=None, metadata=OPTIONAL, **kwargs)


@dataclass
class Record:
    """A results.json object: its fields are its keys, in the order they are written.

    ``nested`` names the fields that hold another record (or a list of them). A key missing
    from the file it was read from (an older writer's) reads as None and stays unwritten, so the
    file comes back as it was."""

    nested: ClassVar[dict[str, type]] = {}
    #: Keys the record does not know, from the file it was read from: written back after its own.
    extra: dict = field(default_factory=dict, kw_only=True)

    def __post_init__(self):
        self._absent: frozenset = frozenset()  # fields the file being read did not have

    @classmethod
    def from_json(cls, data: dict):
        known = [f for f in dataclasses.fields(cls) if f.name != "extra"]
        values = {f.name: _read(cls.nested.get(f.name), data[f.name]) if f.name in data else None for f in known}
        names = set(values)
        record = cls(**values, extra={k: v for k, v in data.items() if k not in names})
        record._absent = frozenset(f.name for f in known if f.name not in data)
        return record

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and (f.metadata.get("optional") or f.name in self._absent):
                continue
            out[f.name] = _write(value)
        return {**out, **self.extra}


def _read(kind: type | None, value):
    if kind is None or value is None:
        return value
    if isinstance(value, list):
        return [kind.from_json(v) for v in value]
    return kind.from_json(value)


def _write(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_write(v) for v in value]
    return value


@dataclass
class ModelUsed(Record):
    """Which model plugin and adapter trained, and where the model came from (as its plugin says)."""

    use: str
    source: str
    adapter: str


@dataclass
class RefitFigures(Record):
    """The second pass of ``refit_on_validation``: how the model that ships trained."""

    train_samples: int
    epochs: float
    global_step: int
    runtime_s: float


@dataclass
class TrainFigures(Record):
    """How training went: time, steps, the chosen model."""

    nested = {"refit": RefitFigures}

    runtime_s: float
    samples_per_second: float | None
    global_step: int
    epochs: float
    total_steps_planned: int
    steps_per_epoch: int
    train_samples: int
    eval_samples: int
    best_step: int | None
    best_metric: float | None
    metric_for_best_model: str
    restored_best: bool
    stopped_early: bool
    world_size: int
    refit: RefitFigures | None = optional()

    def kept_epochs(self) -> float:
        """Epochs the shipped first-pass model had trained: to its best step when that was restored."""
        step = self.best_step if self.restored_best else self.global_step
        return max(1, step) / self.steps_per_epoch

    def all_steps(self) -> int:
        """Optimizer steps of the whole run, a refit's second pass included."""
        return self.global_step + (self.refit.global_step if self.refit else 0)


@dataclass
class CalibrationFigures(Record):
    """Expected calibration error before and after temperature scaling (fitted on validation)."""

    temperature: float
    ece_before: float
    ece_after: float | None  # None when evaluation.calibrate is off
    test_ece_before: float | None = optional()
    test_ece_after: float | None = optional()


@dataclass
class Confused(Record):
    """One true -> predicted label pair the model mixes up."""

    label: str
    predicted: str
    count: int
    share_of_label: float


@dataclass
class AnalysisFigures(Record):
    """The headline metric and where the model errs."""

    nested = {"most_confused": Confused}

    metric: str
    most_confused: list[Confused] = field(default_factory=list)
    by_group: dict[str, dict] | None = optional()  # group -> {"n", metric...} on validation
    test_by_group: dict[str, dict] | None = optional()


@dataclass
class LeakFigures(Record):
    """Evaluation examples whose text is also in train."""

    split: str
    exact: int
    normalised: int
    examples: list[str] = field(default_factory=list)


@dataclass
class DataFigures(Record):
    """Label counts per split, leakage, and what was dropped or truncated."""

    nested = {"leaks": LeakFigures}

    distribution: dict[str, dict[str, int]]  # split -> label -> count
    leaks: list[LeakFigures] = field(default_factory=list)
    dropped_for_leakage: int = 0
    truncated: dict[str, int] = field(default_factory=dict)  # split -> texts cut at max_length


@dataclass
class FineTuned(Record):
    """The fine-tuned model's own metrics when a stack ships instead."""

    validation: dict
    test: dict | None = optional()


@dataclass
class EnsembleFigures(Record):
    """How the shipped stack is made (stancerun.evaluation.ensemble.Stack) and what the model alone scored."""

    nested = {"fine_tuned": FineTuned}

    members: list[str]
    weights: list[float]
    bias: list[float]
    offsets: list[float]
    decision: str
    fine_tuned: FineTuned


@dataclass
class Verdict(Record):
    """The model against the strongest baseline (chosen on validation) on the headline metric.

    ``differences``: split -> the paired bootstrap of model minus baseline, None without
    resamples; "test" only when there is a test split. Written as the verdict's own keys."""

    metric: str
    baseline: str
    differences: dict[str, dict | None] = field(default_factory=dict)

    SPLITS: ClassVar[tuple[str, ...]] = ("validation", "test")

    @classmethod
    def from_json(cls, data: dict) -> "Verdict":
        known = {"metric", "baseline", *cls.SPLITS}
        return cls(data["metric"], data["baseline"], {s: data[s] for s in cls.SPLITS if s in data},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        return {"metric": self.metric, "baseline": self.baseline, **self.differences, **self.extra}


@dataclass
class PlotFiles(Record):
    """The run's figures, relative to the run directory."""

    loss: str | None = optional()
    confusion: str | None = optional()
    reliability: str | None = optional()


@dataclass
class Results(Record):
    """results.json. ``final`` and ``test`` are the shipped model's metrics (a stack's when one
    ships); ``baseline`` the untrained model's on validation; ``baselines`` and
    ``test_baselines`` the baseline plugins' per split; ``intervals`` row -> metric -> interval
    (rows: "final", "baseline", each baseline, "test", "test_<baseline>")."""

    nested = {"model": ModelUsed, "train": TrainFigures, "calibration": CalibrationFigures,
              "analysis": AnalysisFigures, "data": DataFigures, "ensemble": EnsembleFigures, "verdict": Verdict,
              "plots": PlotFiles}

    model: ModelUsed | None = optional()
    baseline: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    train: TrainFigures | None = None
    test: dict | None = optional()
    baselines: dict[str, dict] | None = optional()
    intervals: dict[str, dict] | None = optional()
    calibration: CalibrationFigures | None = optional()
    analysis: AnalysisFigures | None = optional()
    data: DataFigures | None = optional()
    ensemble: EnsembleFigures | None = optional()
    verdict: Verdict | None = optional()
    test_baselines: dict[str, dict] | None = optional()
    plots: PlotFiles | None = optional()
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_json(cls, data: dict) -> "Results":
        # Version 1 files say nothing of their version; their shape is the same.
        return super().from_json({**data, "format_version": data.get("format_version", 1)})

    def to_json(self) -> dict:
        out = super().to_json()
        version = out.pop("format_version")
        # First, so that a person opening the file sees it; a version 1 file stays as it was.
        return {"format_version": version, **out} if version >= 2 else out

    def row_intervals(self, row: str) -> dict[str, dict]:
        """metric -> bootstrap interval of one row ("final", "baseline", a baseline's name, "test",
        "test_<baseline>"); empty when the run drew none."""
        return (self.intervals or {}).get(row) or {}

    def interval(self, row: str, metric: str) -> dict | None:
        """The bootstrap interval of ``metric`` on a row, None when there is none."""
        return self.row_intervals(row).get(metric)

    def shipped_scores(self) -> dict[str, dict]:
        """The shipped model's metrics per results.json key: "final" (validation), "test" when scored."""
        return {"final": self.final, **({"test": self.test} if self.test is not None else {})}

    @property
    def headline(self) -> str | None:
        """The metric the run is judged by, when the run recorded it."""
        return self.analysis.metric if self.analysis else None


def read(path: Path) -> Results:
    """A results.json file (any format version)."""
    return Results.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

