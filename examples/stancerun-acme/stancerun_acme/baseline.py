"""Baseline ``acme_lexicon``: each label has a list of keywords; a text scores, per label, the
number of that label's keywords it contains, plus the label's log-frequency (which breaks ties).
The keywords come from the experiment (``keywords``) or are learned from the training split.

A baseline is fitted in seconds on the training split and scored beside the fine-tuned model in
results.json and report.md (stancerun.Baseline). ``save``/``restore`` let
``[ensemble] stack`` ship it inside the run's model directory: JSON here, never pickle.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Annotated

from stancerun import Range, UsageError
from stancerun_acme.text import words

FILE = "acme_lexicon.json"


class Lexicon:
    def __init__(self, keywords: dict[str, list[str]] | None, size: int):
        self.given, self.size = keywords, size
        self.labels: list[str] = []
        self.prior: list[float] = []  # log-frequency of each label in training
        self.lexicon: dict[str, list[str]] = {}  # label -> keywords

    def fit(self, train, labels):
        self.labels = list(labels)
        counts = Counter(train.labels)
        self.prior = [math.log((counts[i] + 1) / (len(train) + len(labels))) for i in range(len(labels))]
        if self.given is not None:
            unknown = sorted(set(self.given) - set(labels))
            if unknown:  # a UsageError ends the run with exit code 2 and this message
                raise UsageError(f"acme_lexicon: keywords for {unknown}, which are not labels {self.labels}")
            self.lexicon = {label: [w.lower() for w in self.given.get(label, [])] for label in self.labels}
        else:
            self.lexicon = self._learn(train)

    def _learn(self, train) -> dict[str, list[str]]:
        """Per label, the `size` words most over-represented in its texts (smoothed log-odds)."""
        per_label = [Counter() for _ in self.labels]  # label id -> word -> texts that have it
        for text, label in zip(train.texts, train.labels):
            per_label[label].update(set(words(text)))
        everywhere = sum(per_label, Counter())
        smoothing = len(everywhere)  # add-one over the vocabulary
        grand_total = sum(everywhere.values()) + len(self.labels) * smoothing
        lexicon = {}
        for counts, label in zip(per_label, self.labels):
            inside_total = sum(counts.values()) + smoothing
            outside_total = grand_total - inside_total
            odds = {w: math.log((counts[w] + 1) / inside_total)
                    - math.log((everywhere[w] - counts[w] + 1) / outside_total) for w in counts}
            ranked = sorted(odds, key=lambda w: (-odds[w], w))  # ties by word: the same lexicon every time
            lexicon[label] = [w for w in ranked[: self.size] if odds[w] > 0]
        return lexicon

    def predict(self, examples):
        import numpy as np

        if not self.labels:
            raise RuntimeError("acme_lexicon: call fit or restore before predict")
        # The target (examples.pairs) is not used; a target never seen in training scores as any other.
        keywords = [set(self.lexicon.get(label, ())) for label in self.labels]
        scores = np.tile(np.asarray(self.prior, dtype=np.float32), (len(examples), 1))
        for row, text in enumerate(examples.texts):
            found = set(words(text))
            scores[row] += [len(found & k) for k in keywords]
        return scores  # N x len(labels), higher = more likely

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"labels": self.labels, "prior": self.prior, "lexicon": self.lexicon}
        (directory / FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")

    def restore(self, directory, labels):
        # Called on a fresh object built from the same options.
        state = json.loads((Path(directory) / FILE).read_text(encoding="utf-8"))
        if state["labels"] != list(labels):
            raise ValueError(f"{directory}: acme_lexicon was fitted on labels {state['labels']}, not {list(labels)}")
        self.labels, self.prior, self.lexicon = state["labels"], state["prior"], state["lexicon"]


def acme_lexicon(*, keywords: dict[str, list[str]] | None = None, size: Annotated[int, Range(ge=1)] = 20):
    """Counts each label's keywords in a text; keywords given per label, or the `size` most telling words learned."""
    return Lexicon(keywords, size)
