"""Resume after a crash: a run killed at any moment continues from its last complete
checkpoint and ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_experiment
from stancerun.cli import main
from stancerun.config import load_experiment
from stancerun.runner import resume_run, run_experiment

KILLER = '''
import os, signal
from pathlib import Path
import stancerun

class Killer:
    def __init__(self, at_step, sig, marker):
        self.at_step, self.sig, self.marker = at_step, sig, Path(marker)

    def on_log(self, run, logs):
        if run.global_step == self.at_step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), getattr(signal, self.sig))

def killer(*, at_step: int, sig: str = "SIGKILL", marker: str):
    return Killer(at_step, sig, marker)

@stancerun.hookimpl
def stancerun_register_callbacks(register):
    register("killer", killer)
'''

DRIVER = '''
import sys
sys.path.insert(0, sys.argv[1])
import killer_plugin
from stancerun import plugins
from stancerun.plugins import build_registry, discover
plugins._registry = build_registry([(ep.name, ep, d, v) for ep, d, v in discover()]
                                   + [("killer", killer_plugin, "tests", "0")])
from stancerun.cli import main
raise SystemExit(main(sys.argv[2:]))
'''


@pytest.fixture
def killer(tmp_path, monkeypatch):
    (tmp_path / "killer_plugin.py").write_text(KILLER)
    (tmp_path / "driver.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import killer_plugin
    from stancerun import plugins
    from stancerun.plugins import build_registry, discover

    importlib.reload(killer_plugin)
    registry = build_registry([(ep.name, ep, d, v) for ep, d, v in discover()] + [("killer", killer_plugin, "tests", "0")])
    monkeypatch.setattr(plugins, "_registry", registry)
    return registry


def experiment_file(tmp_path, tiny_bert, sig, at_step=7):
    extra = textwrap.dedent(f"""
        [[callbacks]]
        use = "early_stopping"
        patience = 4

        [[callbacks]]
        use = "killer"
        at_step = {at_step}
        sig = "{sig}"
        marker = "{tmp_path / 'killed'}"

        [evaluation]
        bootstrap_resamples = 200
        plots = false
        """)
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    overrides = ["training.logging_steps=1", "training.save_strategy=steps", "training.save_steps=3",
                 "training.eval_strategy=steps", "training.eval_steps=4", "training.learning_rate=2e-3"]
    return path, overrides


def launch(tmp_path, path, overrides, out):
    args = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path), "run", str(path), "--output-dir", str(out)]
    for item in overrides:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


# 9 steps per epoch. A checkpoint every 3 steps: killed in the first epoch (resumed from step 6) or
# in the second (from step 15: the data order must be the second epoch's, not the first's). A
# checkpoint every 9: resumed from the first epoch's last batch (the RNG state goes back after the
# skipped epoch ends, where the uninterrupted run was when it saved).
@pytest.mark.parametrize("at_step, checkpoints, save", [(7, [3, 6], 3), (16, [3, 6, 9, 12, 15], 3), (12, [9], 9)])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, tiny_bert, stance_data, killer, at_step,
                                                            checkpoints, save):
    path, overrides = experiment_file(tmp_path, tiny_bert, "SIGKILL", at_step)
    overrides = [o if not o.startswith("training.save_steps=") else f"training.save_steps={save}" for o in overrides]
    done = launch(tmp_path, path, overrides, tmp_path / "killed-run")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    run = tmp_path / "killed-run"
    assert sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) \
        == checkpoints
    assert not (run / "results.json").exists()
    resume_run(run, registry=killer)

    straight = run_experiment(load_experiment(path, overrides, registry=killer), output_dir=str(tmp_path / "straight"),
                              registry=killer)
    resumed, reference = (json.loads((d / "results.json").read_text()) for d in (run, straight))
    assert resumed["final"] == reference["final"]
    assert resumed["train"]["global_step"] == reference["train"]["global_step"]
    assert resumed["train"]["best_step"] == reference["train"]["best_step"]
    assert (run / "predictions.csv").read_text() == (straight / "predictions.csv").read_text()
    # every log line, values included: the resumed steps train on the same batches as the uninterrupted ones
    lines = lambda d: list(map(json.loads, (d / "metrics.jsonl").read_text().splitlines()))
    assert lines(run) == [{k: pytest.approx(v, abs=1e-6) if isinstance(v, float) else v for k, v in e.items()}
                          for e in lines(straight)]


def test_sigterm_saves_a_checkpoint_and_exits_130(tmp_path, tiny_bert, stance_data, killer):
    path, overrides = experiment_file(tmp_path, tiny_bert, "SIGTERM")
    done = launch(tmp_path, path, overrides, tmp_path / "run")
    assert done.returncode == 130, done.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-7" / "trainer_state.json").is_file()
    assert main(["resume", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["train"]["global_step"] > 7
    assert main(["resume", str(tmp_path / "run")]) == 2  # finished: nothing to resume


def test_save_total_limit_never_deletes_the_best_checkpoint(tmp_path, tiny_bert, stance_data):
    extra = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    # A huge learning rate: the best evaluation (lowest loss) comes early, later ones are worse.
    overrides = ["training.learning_rate=0.2", "training.eval_strategy=steps", "training.eval_steps=3",
                 "training.save_strategy=steps", "training.save_steps=3", "training.save_total_limit=1",
                 "training.metric_for_best_model=loss"]
    run = run_experiment(load_experiment(path, overrides), output_dir=str(tmp_path / "run"))
    best = json.loads((run / "results.json").read_text())["train"]["best_step"]
    kept = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir())
    assert best != 27 and kept == sorted({best, 27})
