"""Dataset ``acme_jsonl``: JSON Lines files, one object per line, e.g.

    {"text": "Finally, safe bike lanes!", "target": "bike lanes", "label": "FAVOR"}

with an optional ``label_map`` that renames the file's labels (FAVOR -> support) as they are read.
"""

from __future__ import annotations

from stancerun import File, RowDataset, RowSource, Split, read_jsonl


class AcmeJsonl(RowDataset):
    """RowDataset does the shared work (label ids, errors naming file and row, carving a
    validation split, ``read`` for `stancerun evaluate --data`); a subclass only reads rows."""

    def __init__(self, *, paths: dict, label_map: dict[str, str], **common):
        super().__init__(**common)  # split, text_column, text_pair_column, label_column, labels
        self.paths = paths
        self.label_map = label_map

    def sources(self) -> dict[str, RowSource | None]:
        return {split: self.read_file(path) if path else None for split, path in self.paths.items()}

    def read_file(self, path: str) -> RowSource:
        # Also what `stancerun evaluate --data FILE` reads, so a new file gets the same label map.
        source = read_jsonl(path)  # stancerun's reader: its errors name the file and line
        for row in source.rows:
            label = row.get(self.label_column)
            if isinstance(label, str) and label in self.label_map:
                row[self.label_column] = self.label_map[label]
        return source

    def files(self) -> list[str]:
        return [path for path in self.paths.values() if path]  # fingerprinted in environment.json


# The factory's keyword-only signature is the schema of the [data] table: stancerun checks every
# key, type and file against it before anything runs, and fills in the defaults. `File` options
# arrive as absolute paths (written relative to the experiment file).
def acme_jsonl(*, train: File, validation: File | None = None, test: File | None = None, split: Split = Split(),
               text_field: str = "text", target_field: str | None = None, label_field: str = "label",
               labels: list[str] | None = None, label_map: dict[str, str] | None = None):
    """JSON Lines files with text, target and label fields; label_map renames the file's labels."""
    return AcmeJsonl(paths={"train": train, "validation": validation, "test": test}, label_map=label_map or {},
                     split=split, text_column=text_field, text_pair_column=target_field, label_column=label_field,
                     labels=labels)
