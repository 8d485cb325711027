"""Resume after a crash: a run killed at any moment continues from its last complete
checkpoint and ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_experiment
from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import resume_run, run_experiment

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
from stancerun.registry import discovery as plugins
from stancerun.registry.discovery import build_registry, discover
plugins._registry = build_registry([(ep.name, ep, d, v) for ep, d, v in discover()]
                                   + [("killer", killer_plugin, "tests", "0")])
from stancerun.cli.main import main
raise SystemExit(main(sys.argv[2:]))
'''


@pytest.fixture
def killer(tmp_path, monkeypatch):
    (tmp_path / "killer_plugin.py").write_text(KILLER)
    (tmp_path / "driver.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import killer_plugin
    from stancerun.registry import discovery as plugins
    from stancerun.registry.discovery import build_registry, discover

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


# -- a kill anywhere ---------------------------------------------------------------------
# The driver SIGKILLs its own process at the moment STANCERUN_TEST_KILL names, chosen from the
# run's own progress (which checkpoint, which evaluation), not from a fixed step. Without the
# variable it is plain `stancerun`. Before dying it writes what it saw to STANCERUN_TEST_KILL_NOTE.
KILL_DRIVER = '''
import json, os, signal, sys
from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.engine.trainer import Trainer

POINT = os.environ.get("STANCERUN_TEST_KILL", "")
seen = {"point": POINT, "checkpoints": [], "evaluations": 0, "step": None}


def die(where):
    seen["where"] = where
    Path(os.environ["STANCERUN_TEST_KILL_NOTE"]).write_text(json.dumps(seen))
    os.kill(os.getpid(), signal.SIGKILL)


if POINT:
    atomic_directory = artifacts.atomic_directory

    def checkpoint_directory(target, fill):
        target = Path(target)
        if target.parent.name != "checkpoints":
            return atomic_directory(target, fill)
        seen["checkpoints"].append(int(target.name.split("-")[1]))
        if POINT == "during_checkpoint_write" and len(seen["checkpoints"]) == 2:
            def fill_then_die(tmp):  # every file written, the rename not yet done
                fill(tmp)
                die(f"writing {tmp.name}")
            return atomic_directory(target, fill_then_die)
        atomic_directory(target, fill)
        if POINT == "after_checkpoint" and len(seen["checkpoints"]) == 2:
            die(f"after {target.name}")
        # the first checkpoint taken at an epoch's last batch: its epoch is a whole number
        if POINT == "epoch_last_batch" and float(json.loads((target / "trainer_state.json").read_text())["epoch"]).is_integer():
            die(f"after {target.name} (epoch end)")

    artifacts.atomic_directory = checkpoint_directory

    step = Trainer.step

    def step_then_maybe_die(self, loop, batch, epoch, done):
        over = step(self, loop, batch, epoch, done)
        seen["step"] = self.run.global_step
        # halfway between the 3rd checkpoint and the next one
        if POINT == "mid_epoch" and len(seen["checkpoints"]) >= 3 \\
                and self.run.global_step == seen["checkpoints"][2] + self.training.save_steps // 2:
            die(f"after step {self.run.global_step} (epoch {epoch}, batch {done})")
        return over

    Trainer.step = step_then_maybe_die

    evaluation_step = Trainer.evaluation_step

    def counted_evaluation_step(self, model):
        seen["evaluations"] += 1
        if POINT == "during_evaluation" and seen["evaluations"] == 2:
            loader = self.eval_loaders["validation"]

            def first_batch_then_die():
                for i, batch in enumerate(loader):
                    if i == 1:
                        die(f"evaluation {seen['evaluations']} at step {self.run.global_step}, after its first batch")
                    yield batch

            self.eval_loaders["validation"] = first_batch_then_die()
        return evaluation_step(self, model)

    Trainer.evaluation_step = counted_evaluation_step

from stancerun.cli.main import main
raise SystemExit(main(sys.argv[1:]))
'''

KILL_POINTS = ["after_checkpoint", "during_checkpoint_write", "during_evaluation", "mid_epoch", "epoch_last_batch"]


def kill_driver(folder, *args, point=None, note=None):
    from stancerun.registry.discovery import ALLOW_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCERUN_TEST_KILL")}
    env[ALLOW_ENV] = ""
    if point:
        env["STANCERUN_TEST_KILL"], env["STANCERUN_TEST_KILL_NOTE"] = point, str(note)
    return subprocess.run([sys.executable, str(folder / "kill_driver.py"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def kill_anywhere(tmp_path_factory, tiny_bert):
    """The experiment, and its uninterrupted run. LoRA (dropout 0.1) on 72 training rows: 9 steps
    an epoch, 3 epochs; a checkpoint every 6 steps (6, 12 mid-epoch; 18 an epoch's last batch; 24),
    evaluation at each epoch's end, the best model restored at the end, early stopping that never stops."""
    from conftest import stance_rows, write_csv

    folder = tmp_path_factory.mktemp("kill-anywhere")
    write_csv(folder / "data" / "train.csv", stance_rows(90, seed=1))
    write_csv(folder / "data" / "test.csv", stance_rows(30, seed=2))
    extra = textwrap.dedent("""
        [[callbacks]]
        use = "early_stopping"
        patience = 100

        [evaluation]
        bootstrap_resamples = 50
        plots = false
        baselines = []
        """)
    path = tiny_experiment(folder, tiny_bert, "lora", extra=extra)
    overrides = ["training.logging_steps=1", "training.save_strategy=steps", "training.save_steps=6",
                 "training.eval_strategy=epoch", "training.per_device_eval_batch_size=8",
                 "training.load_best_model_at_end=true"]
    args = ["run", path] + [a for item in overrides for a in ("--set", item)]
    (folder / "kill_driver.py").write_text(KILL_DRIVER)
    done = kill_driver(folder, *args, "--output-dir", folder / "straight")
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, args, folder / "straight"


def assert_same_run(run, straight):
    import csv

    rows = lambda d: list(csv.DictReader((d / "predictions.csv").open(newline="")))
    got, want = rows(run), rows(straight)
    assert len(got) == len(want) and list(got[0]) == list(want[0])
    probs = [k for k in want[0] if k.startswith("prob_")]
    assert probs
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in probs and k != "confidence"} \
            == {k: v for k, v in w.items() if k not in probs and k != "confidence"}
        assert [float(g[k]) for k in probs] == pytest.approx([float(w[k]) for k in probs], abs=1e-6)
    lines = lambda d: list(map(json.loads, (d / "metrics.jsonl").read_text().splitlines()))
    assert [(e["type"], e["step"]) for e in lines(run)] == [(e["type"], e["step"]) for e in lines(straight)]
    assert lines(run) == [{k: pytest.approx(v, abs=1e-6) if isinstance(v, float) else v for k, v in e.items()}
                          for e in lines(straight)]
    resumed, reference = (json.loads((d / "results.json").read_text()) for d in (run, straight))
    assert resumed["final"] == pytest.approx(reference["final"], abs=1e-6)
    for key in ("global_step", "best_step", "restored_best", "stopped_early"):
        assert resumed["train"][key] == reference["train"][key], key
    assert resumed["train"]["best_metric"] == pytest.approx(reference["train"]["best_metric"], abs=1e-6)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_anywhere_then_resume_equals_uninterrupted(kill_anywhere, tmp_path, point):
    folder, args, straight = kill_anywhere
    run = tmp_path / "killed"
    done = kill_driver(folder, *args, "--output-dir", run, point=point, note=tmp_path / "kill-note.json")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    note = json.loads((tmp_path / "kill-note.json").read_text())
    print("killed", note["where"], "- checkpoints begun:", note["checkpoints"])  # shown when the test fails
    assert not (run / "results.json").exists()
    complete = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    if point == "during_checkpoint_write":  # the half-done checkpoint is left, under its temporary name
        assert (run / "checkpoints" / f".step-{note['checkpoints'][-1]}.tmp").is_dir()
        assert complete == note["checkpoints"][:-1]
    else:
        assert complete == note["checkpoints"]
    resumed = kill_driver(folder, "resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(run, straight)
