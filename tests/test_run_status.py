"""A run that dies leaves something a person can read: status.json says failed (with the error,
the step and the traceback), interrupted, or finished; compare and resume read it."""

from __future__ import annotations

import json

import pytest

from conftest import Explodes, tiny_experiment
from stancerun.cli.main import main


def test_a_failed_run_says_so_and_resume_says_why_before_trying_again(tmp_path, tiny_bert, stance_data, exploding,
                                                                      capsys):
    extra = "[[callbacks]]\nuse = \"explodes\"\nstep = 5\n\n[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
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


def test_a_resume_stopped_during_set_up_keeps_the_step_its_run_had_reached(tmp_path, tiny_bert, stance_data,
                                                                           exploding):
    from stancerun.engine import trainer

    extra = "[[callbacks]]\nuse = \"explodes\"\nstep = 5\n\n[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    run = tmp_path / "run"
    assert main(["run", str(path), "--output-dir", str(run), "--set", "training.num_train_epochs=1",
                 "--set", "training.logging_steps=1", "--set", "training.save_strategy=\"steps\"",
                 "--set", "training.save_steps=3"]) == 1  # failed at step 5, its checkpoint at 3

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped by signal SIGTERM")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "Trainer", stopped)  # a signal before the checkpoint is loaded
        assert main(["resume", str(run)]) == 130
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 5  # not 0: nothing it had done was undone
    Explodes.armed = False
    assert main(["resume", str(run)]) == 0  # from its checkpoint at step 3
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


# -- a signal anywhere -------------------------------------------------------------------
# A callback sends its own process the signal at a chosen moment: on_train_begin comes at the end
# of set-up (model prepared, baseline evaluated; no checkpoint yet), on_train_end after the report.
SIGNALLER = '''
import os, signal
import stancerun

class Signaller:
    def __init__(self, event, sig):
        setattr(self, event, lambda run, *args: os.kill(os.getpid(), getattr(signal, sig)))

@stancerun.hookimpl
def stancerun_register_callbacks(register):
    register("signaller", lambda *, event, sig: Signaller(event, sig))
'''

SIGNAL_DRIVER = '''
import sys
sys.path.insert(0, sys.argv[1])
import signaller_plugin
from stancerun.registry import discovery as plugins
from stancerun.registry.discovery import build_registry, discover
plugins._registry = build_registry([(ep.name, ep, d, v) for ep, d, v in discover()]
                                   + [("signaller", signaller_plugin, "tests", "0")])
from stancerun.cli.main import main
raise SystemExit(main(sys.argv[2:]))
'''


def signalled_run(tmp_path, tiny_bert, event: str, sig: str):
    """`stancerun run` in a subprocess that sends itself ``sig`` at ``event``: (its result, its run directory)."""
    import subprocess
    import sys

    (tmp_path / "signaller_plugin.py").write_text(SIGNALLER)
    (tmp_path / "driver.py").write_text(SIGNAL_DRIVER)
    extra = (f"[[callbacks]]\nuse = \"signaller\"\nevent = \"{event}\"\nsig = \"{sig}\"\n\n"
             "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n")
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path), "run", str(path),
                           "--output-dir", str(run), "--set", "training.num_train_epochs=1"],
                          capture_output=True, text=True, timeout=300)
    return done, run


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_set_up_says_interrupted_and_resume_says_there_is_nothing_to_continue(
        tmp_path, tiny_bert, stance_data, sig, capsys):
    done, run = signalled_run(tmp_path, tiny_bert, "on_train_begin", sig)
    assert done.returncode == 130, done.stderr[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 0
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())

    capsys.readouterr()
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "interrupted at step 0, before its first checkpoint: nothing to resume; run the experiment again" in err
    assert "save_strategy" not in err and len(err.splitlines()) == 1


def test_sigterm_after_the_report_still_says_interrupted_with_the_step(tmp_path, tiny_bert, stance_data):
    done, run = signalled_run(tmp_path, tiny_bert, "on_train_end", "SIGTERM")
    assert done.returncode == 130, done.stderr[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 9  # one epoch of 9 steps
