"""Callback ``acme_events``: records every event it is called with to a JSON file in the run
directory. Useful to see what happens when; and a test can check it saw every event."""

from __future__ import annotations

import json
import os
from pathlib import Path

EVENTS = ("on_train_begin", "on_log", "on_evaluate", "on_save", "on_train_end")  # the callback protocol's


class EventLog:
    def __init__(self, filename: str):
        self.filename = filename
        self.events: list[dict] = []

    def _record(self, run, event: str, **details) -> None:
        self.events.append({"event": event, "step": run.global_step, "epoch": run.epoch, **details})
        # Callbacks run on every process under `accelerate launch`: only the main one writes.
        if not run.is_main_process or run.output_dir is None:
            return
        path = Path(run.output_dir) / self.filename
        if len(self.events) == 1 and path.exists():
            # `stancerun resume`: the interrupted process wrote a log here; carry it on. (A callback
            # whose state changes training, like early stopping's patience, implements
            # state_dict/load_state_dict instead: see docs/plugins.md.)
            self.events[:0] = json.loads(path.read_text(encoding="utf-8"))
        tmp = path.with_name(f".{self.filename}.tmp")
        tmp.write_text(json.dumps(self.events, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    def on_train_begin(self, run):
        self._record(run, "on_train_begin")

    def on_log(self, run, logs):
        self._record(run, "on_log", logs=logs)

    def on_evaluate(self, run, metrics):
        self._record(run, "on_evaluate", metrics=metrics)

    def on_save(self, run, path):
        self._record(run, "on_save", checkpoint=Path(path).name)

    def on_train_end(self, run, results):
        self._record(run, "on_train_end", final=results.get("final", {}))


def acme_events(*, filename: str = "acme_events.json"):
    """Write every callback event (name, step, epoch, payload) to a JSON file in the run directory."""
    return EventLog(filename)
