"""A run that dies leaves something a person can read: status.json says failed (with the error,
the step and the traceback), interrupted, or finished; compare and resume read it."""

from __future__ import annotations

import json
import types

import pytest

from conftest import tiny_experiment
from stancerun.cli.main import main
from stancerun.registry.discovery import build_registry, discover


class Explodes:
    """Raises at one optimizer step, once armed (the resume runs with it disarmed)."""

    armed = True

    def on_log(self, run, logs):
        if run.global_step == 5 and Explodes.armed:
            raise RuntimeError("the GPU caught fire")


@pytest.fixture
def registry(monkeypatch):
    import stancerun
    from stancerun.registry import discovery as plugins

    plugin = types.ModuleType("exploding_plugin")

    @stancerun.hookimpl
    def stancerun_register_callbacks(register):
        register("explodes", lambda: Explodes())

    plugin.stancerun_register_callbacks = stancerun_register_callbacks
    registry = build_registry([(ep.name, ep, d, v) for ep, d, v in discover()] + [("explodes", plugin, "tests", "0")])
    monkeypatch.setattr(plugins, "_registry", registry)
    monkeypatch.setattr(Explodes, "armed", True)
    return registry


def test_a_failed_run_says_so_and_resume_says_why_before_trying_again(tmp_path, tiny_bert, stance_data, registry,
                                                                      capsys):
    extra = "[[callbacks]]\nuse = \"explodes\"\n\n[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    run = tmp_path / "run"
    assert main(["run", str(path), "--output-dir", str(run), "--set", "training.logging_steps=1",
                 "--set", "training.save_strategy=\"steps\"", "--set", "training.save_steps=3"]) == 1
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["step"] == 5
    assert status["error"] == "RuntimeError: the GPU caught fire" and "on_log" in status["traceback"]
    assert not (run / "results.json").exists()

    capsys.readouterr()
    assert main(["compare", str(run)]) == 2
    assert "this run failed at step 5: RuntimeError: the GPU caught fire" in capsys.readouterr().err

    Explodes.armed = False  # the cause is gone: resume continues from step 3 and finishes
    assert main(["resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "this run failed at step 5: RuntimeError: the GPU caught fire" in err and "resuming from step-3" in err
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "results.json").is_file()
