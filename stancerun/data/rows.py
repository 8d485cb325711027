"""Labelled splits from raw rows: label ids, row-level errors, carving a validation split.

No torch here: the built-in dataset plugins (csv, jsonl, inline, hf) only read rows; this
module reads CSV and JSONL files and turns rows into :class:`Splits` the same way for all of them.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from stancerun.errors import DataError, UsageError, show_file
from stancerun.options import Split


@dataclass
class Examples:
    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None  # the text_pair_column (e.g. the stance target), when used

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Iterable[int]) -> "Examples":
        indices = list(indices)
        return Examples(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.pairs[i] for i in indices] if self.pairs is not None else None,
        )


def concat(a: Examples, b: Examples) -> Examples:
    pairs = a.pairs + b.pairs if a.pairs is not None and b.pairs is not None else None
    return Examples(a.texts + b.texts, a.labels + b.labels, pairs)


@dataclass
class Splits:
    train: Examples
    validation: Examples
    labels: list[str]
    test: Examples | None = None
    files: list[str] = field(default_factory=list)  # data files read (fingerprinted in environment.json)
    validation_from_split: bool = False


@dataclass
class RowSource:
    """Rows of one split and where they came from (for error messages)."""

    name: str  # e.g. "data/train.csv"
    rows: list[dict]
    first_row: int = 1  # the number shown for rows[0] (a CSV's first data row is line 2)


def read_text(path: str) -> str:
    """A data file's text; a file that is not UTF-8 is named with the line and bytes at fault."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        bad = data[error.start : error.start + 4].hex(" ")
        raise UsageError(f"{show_file(path)}, line {line}, column {column}: not UTF-8 (bytes {bad}); re-save the "
                         "file as UTF-8 (a spreadsheet's \"CSV UTF-8\", or iconv -f latin1 -t utf-8 IN > OUT if it "
                         "is Latin-1)") from None


def read_csv(path: str, delimiter: str = ",") -> RowSource:
    """Rows of a CSV file with a header row (UTF-8, a byte-order mark allowed)."""
    if len(delimiter) != 1:
        raise UsageError(f"{show_file(path)}: the delimiter must be one character, got {delimiter!r}")
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter))
    except csv.Error as error:
        raise UsageError(f"{show_file(path)}: not a readable CSV file: {error}") from None
    return RowSource(show_file(path), rows, first_row=2)  # line 1 is the header


def read_jsonl(path: str) -> RowSource:
    """Rows of a JSON Lines file: one object per line."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{show_file(path)}, line {number}: not valid JSON: {error.msg}") from None
        except (ValueError, RecursionError) as error:  # a 5,000-digit number, nesting too deep
            raise UsageError(f"{show_file(path)}, line {number}: not usable JSON: {error}") from None
        if not isinstance(row, dict):
            raise UsageError(f"{show_file(path)}, line {number}: expected a JSON object")
        rows.append(row)
    return RowSource(show_file(path), rows)


def is_jsonl(path: str) -> bool:
    return str(path).lower().endswith((".jsonl", ".json"))


class RowDataset:
    """Shared options and logic of the built-in datasets; subclasses implement ``sources``.
    It keeps :class:`stancerun.contracts.Dataset` whole: ``load``, ``read`` and the column names."""

    def __init__(self, *, split: Split, text_column: str, text_pair_column: str | None, label_column: str,
                 labels: list[str] | None):
        self.split = split
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.labels = labels

    def sources(self) -> dict[str, RowSource | None]:
        """{"train": ..., "validation": ... or None, "test": ... or None}"""
        raise NotImplementedError

    def files(self) -> list[str]:
        return []

    @property
    def split_seed(self) -> int:
        return self.split.seed

    def read_file(self, path: str) -> RowSource:
        """Rows of a file the user names later (``evaluate --data``): CSV or JSONL, by extension."""
        return read_jsonl(path) if is_jsonl(path) else read_csv(path)

    def read(self, path: str, labels: list[str]) -> Examples:
        """Labelled examples from a new file, with this dataset's columns and ``labels``' ids."""
        return self.examples(self.read_file(path), {name: i for i, name in enumerate(labels)})

    def label_names(self, train: RowSource) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        return sorted({_label_text(row.get(self.label_column)) for row in train.rows} - {""})

    def check(self) -> tuple[list[str], list[str] | None]:
        """(every problem in the data, the label names): :meth:`load`'s checks, reported together."""
        try:
            return [], self.load().labels
        except DataError as error:
            return error.problems, None
        except UsageError as error:
            return [str(error)], None

    def load(self) -> Splits:
        duplicates = sorted({name for name in self.labels or () if list(self.labels).count(name) > 1})
        if duplicates:
            raise DataError([f"labels: {', '.join(map(repr, duplicates))} listed more than once; each label once "
                             "(the list's order fixes the label ids)"])
        sources = self.sources()
        train_source = sources["train"]
        names = self.label_names(train_source)
        if len(names) < 2:
            raise DataError([f"{train_source.name}: column '{self.label_column}' has {len(names)} label(s); "
                             "a classifier needs at least 2"])
        ids = {name: i for i, name in enumerate(names)}
        splits, problems = {}, []
        for key, source in sources.items():
            try:
                splits[key] = self.examples(source, ids) if source is not None else None
            except DataError as error:  # every split's problems, not only the first split's
                problems += error.problems
        if problems:
            raise DataError(problems)
        train, validation = splits["train"], splits.get("validation")
        carved = validation is None
        if carved:
            train, validation = carve(train, self.split)
        return Splits(train, validation, names, splits.get("test"), self.files(), carved)

    def examples(self, source: RowSource, ids: dict[str, int]) -> Examples:
        """A split's examples; every bad row is reported (:class:`DataError`), not just the first."""
        texts, labels, pairs = [], [], [] if self.text_pair_column else None
        if not source.rows:
            raise DataError([f"{source.name}: no rows"])
        columns = [self.text_column, self.label_column] + ([self.text_pair_column] if self.text_pair_column else [])
        missing = [column for column in columns if column not in source.rows[0]]
        if missing:
            raise DataError([f"{source.name}: no column '{column}' (columns: {', '.join(map(str, source.rows[0]))})"
                             for column in missing])
        problems = []
        for i, row in enumerate(source.rows):
            where = f"{source.name}, row {i + source.first_row}"
            text = row.get(self.text_column)
            label = _label_text(row.get(self.label_column))
            pair = row.get(self.text_pair_column) if pairs is not None else ""
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{where}: empty or missing text in column '{self.text_column}'")
            elif label not in ids:
                problems.append(f"{where}: label {label!r} is not one of the experiment's labels {list(ids)}")
            elif not isinstance(pair, str):
                problems.append(f"{where}: missing text pair in column '{self.text_pair_column}'")
            else:
                texts.append(text)
                labels.append(ids[label])
                if pairs is not None:
                    pairs.append(pair)
        if problems:
            raise DataError(problems)
        return Examples(texts, labels, pairs)


def _label_text(value) -> str:
    if value is None:
        return ""
    return str(value).strip()


def carve(train: Examples, split: Split) -> tuple[Examples, Examples]:
    """Split ``train`` into (train, validation); stratified keeps each label's share."""
    n = len(train)
    n_val = min(n - 1, max(1, round(n * split.test_size)))
    if n < 2:
        raise UsageError("cannot carve a validation split out of fewer than 2 training examples")
    rng = random.Random(split.seed)
    if not split.stratify:
        order = list(range(n))
        rng.shuffle(order)
        val = sorted(order[:n_val])
    else:
        by_label: dict[int, list[int]] = {}
        for i, label in enumerate(train.labels):
            by_label.setdefault(label, []).append(i)
        # Largest remainder: each label gets its share of n_val, rounded so the total is exact.
        shares = {label: len(idx) * n_val / n for label, idx in by_label.items()}
        counts = {label: int(share) for label, share in shares.items()}
        for label in sorted(shares, key=lambda k: (counts[k] - shares[k], k))[: n_val - sum(counts.values())]:
            counts[label] += 1
        val = []
        for label, idx in sorted(by_label.items()):
            idx = idx[:]
            rng.shuffle(idx)
            val += idx[: counts[label]]
        val.sort()
    taken = set(val)
    return train.subset(i for i in range(n) if i not in taken), train.subset(val)
