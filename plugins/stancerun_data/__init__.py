"""Built-in datasets: csv, jsonl, inline, hf.

Each reads rows only; labels, row errors and the carved validation split are handled the
same way for all of them by :class:`stancerun.RowDataset`.
"""

from __future__ import annotations

from pathlib import Path

import stancerun
from stancerun import File, RowDataset, RowSource, Split, UsageError, is_jsonl, read_csv, read_jsonl


class FileDataset(RowDataset):
    def __init__(self, *, jsonl: bool, delimiter: str = ",", train, validation, test, **common):
        super().__init__(**common)
        self.jsonl, self.delimiter = jsonl, delimiter
        self.paths = {"train": train, "validation": validation, "test": test}

    def _read(self, path: str, jsonl: bool) -> RowSource:
        return read_jsonl(path) if jsonl else read_csv(path, self.delimiter)

    def sources(self):
        return {split: self._read(path, self.jsonl) if path else None for split, path in self.paths.items()}

    def read_file(self, path):
        # By extension, so `evaluate --data` takes either kind; a CSV with this dataset's delimiter.
        return self._read(path, is_jsonl(path))

    def files(self):
        return [p for p in self.paths.values() if p]


def csv(*, train: File, validation: File | None = None, test: File | None = None, split: Split = Split(),
        text_column: str = "text", text_pair_column: str | None = None, label_column: str = "label",
        labels: list[str] | None = None, delimiter: str = ","):
    """CSV files with a header row (UTF-8)."""
    return FileDataset(jsonl=False, delimiter=delimiter, train=train, validation=validation, test=test, split=split,
                       text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                       labels=labels)


def jsonl(*, train: File, validation: File | None = None, test: File | None = None, split: Split = Split(),
          text_column: str = "text", text_pair_column: str | None = None, label_column: str = "label",
          labels: list[str] | None = None):
    """JSON Lines files: one object per line."""
    return FileDataset(jsonl=True, train=train, validation=validation, test=test, split=split,
                       text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                       labels=labels)


class InlineDataset(RowDataset):
    def __init__(self, *, train, validation, test, **common):
        super().__init__(**common)
        self.rows = {"train": train, "validation": validation, "test": test}

    def sources(self):
        return {k: RowSource(f"data.{k}", rows) if rows is not None else None for k, rows in self.rows.items()}


def inline(*, train: list[dict], validation: list[dict] | None = None, test: list[dict] | None = None,
           split: Split = Split(), text_column: str = "text", text_pair_column: str | None = None,
           label_column: str = "label", labels: list[str] | None = None):
    """Rows written in the experiment file itself: ``train = [{text = "...", label = "..."}]``."""
    return InlineDataset(train=train, validation=validation, test=test, split=split, text_column=text_column,
                         text_pair_column=text_pair_column, label_column=label_column, labels=labels)


class HFDataset(RowDataset):
    def __init__(self, *, name, subset, revision, train, validation, test, **common):
        super().__init__(**common)
        self.name, self.subset, self.revision = name, subset, revision
        self.split_names = {"train": train, "validation": validation, "test": test}
        self._class_names = None

    def _load(self):
        import datasets

        local = Path(self.name).expanduser()
        if local.is_dir() and (local / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(local))  # a DatasetDict saved with save_to_disk
        return datasets.load_dataset(str(local) if local.is_dir() else self.name, self.subset, revision=self.revision)

    def sources(self):
        loaded = self._load()
        found = {}
        for key, split_name in self.split_names.items():
            if split_name is None:
                found[key] = None
                continue
            if split_name not in loaded:
                raise UsageError(f"dataset '{self.name}' has no split '{split_name}' (splits: {', '.join(loaded)})")
            part = loaded[split_name]
            feature = part.features.get(self.label_column)
            names = getattr(feature, "names", None)  # a ClassLabel column stores ids; rows get names
            rows = part.to_list()
            if names:
                self._class_names = self._class_names or list(names)
                for row in rows:
                    row[self.label_column] = names[row[self.label_column]]
            found[key] = RowSource(f"{self.name}[{split_name}]", rows)
        return found

    def check(self):
        return [], None  # loading may need the hub and `datasets`: checked when the run loads it

    def label_names(self, train):
        if self.labels is None and self._class_names:
            return list(self._class_names)  # keep the dataset's own id order
        return super().label_names(train)


def hf(*, name: str, subset: str | None = None, revision: str | None = None, train: str = "train",
       validation: str | None = None, test: str | None = None, split: Split = Split(),
       text_column: str = "text", text_pair_column: str | None = None, label_column: str = "label",
       labels: list[str] | None = None):
    """A `datasets` data set: a hub name (needs the hub), a local data directory, or a save_to_disk folder.
    ``train``/``validation``/``test`` name its splits."""
    return HFDataset(name=name, subset=subset, revision=revision, train=train, validation=validation, test=test,
                     split=split, text_column=text_column, text_pair_column=text_pair_column,
                     label_column=label_column, labels=labels)


@stancerun.hookimpl
def stancerun_register_datasets(register):
    register("csv", csv)
    register("jsonl", jsonl)
    register("inline", inline)
    register("hf", hf)
