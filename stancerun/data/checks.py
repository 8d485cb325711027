"""Checks on the data before any training: label balance per split, texts shared between
training and evaluation splits (leakage), and texts the tokenizer will truncate."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from stancerun.data.rows import Examples, Splits
from stancerun.errors import UsageError

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing removed: 'Great  plan!' == 'great plan'."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _PUNCT.sub(" ", text.lower()).strip()


@dataclass
class Leak:
    split: str  # "validation" or "test"
    exact: int  # evaluation examples whose text is also in train, character for character
    normalised: int  # ... once case, punctuation and spacing are ignored (includes exact)
    examples: list[str] = field(default_factory=list)  # a few of the shared texts


@dataclass
class DataReport:
    distribution: dict[str, dict[str, int]]  # split -> label -> count
    leaks: list[Leak]
    dropped: int = 0  # training examples removed by on_leakage = "drop"
    truncated: dict[str, int] = field(default_factory=dict)  # split -> texts cut at max_length

    def findings(self) -> list[str]:
        lines = []
        for leak in self.leaks:
            if leak.normalised:
                lines.append(f"{leak.normalised} {leak.split} example(s) also appear in train "
                             f"({leak.exact} exactly, the rest after normalising case/punctuation), e.g. {leak.examples[0]!r}")
        if self.dropped:
            lines.append(f"dropped {self.dropped} training example(s) that duplicate evaluation texts (on_leakage = \"drop\")")
        for split, n in self.truncated.items():
            if n:
                lines.append(f"{n} {split} text(s) are longer than max_length and were truncated")
        return lines


def _distribution(examples: Examples, names: list[str]) -> dict[str, int]:
    counts = {name: 0 for name in names}
    for label in examples.labels:
        counts[names[label]] += 1
    return counts


def _pair_key(examples: Examples, i: int) -> str:
    text = normalise(examples.texts[i])
    return f"{normalise(examples.pairs[i])}||{text}" if examples.pairs is not None else text


def check(splits: Splits, on_leakage: str = "warn") -> DataReport:
    """Inspect the splits; with ``on_leakage = "drop"`` remove leaking examples from train,
    with ``"error"`` refuse to go on (exit 2)."""
    names = splits.labels
    evaluation = [("validation", splits.validation)] + ([("test", splits.test)] if splits.test is not None else [])
    distribution = {split: _distribution(examples, names) for split, examples in [("train", splits.train)] + evaluation}

    train_exact = set(zip(splits.train.texts, splits.train.pairs or [None] * len(splits.train)))
    train_norm = {_pair_key(splits.train, i) for i in range(len(splits.train))}
    leaks, leaked_keys = [], set()
    for split, examples in evaluation:
        pairs = examples.pairs or [None] * len(examples)
        exact = sum((t, p) in train_exact for t, p in zip(examples.texts, pairs))
        shared = [i for i in range(len(examples)) if _pair_key(examples, i) in train_norm]
        leaked_keys |= {_pair_key(examples, i) for i in shared}
        leaks.append(Leak(split, exact, len(shared), [examples.texts[i] for i in shared[:3]]))
    report = DataReport(distribution, leaks)
    if leaked_keys and on_leakage == "error":
        raise UsageError("data.on_leakage = \"error\": " + "; ".join(report.findings())
                         + ". Remove the duplicates, or set on_leakage to \"drop\" or \"warn\"")
    if leaked_keys and on_leakage == "drop":
        keep = [i for i in range(len(splits.train)) if _pair_key(splits.train, i) not in leaked_keys]
        report.dropped = len(splits.train) - len(keep)
        splits.train = splits.train.subset(keep)
        report.distribution["train"] = _distribution(splits.train, names)
    return report
