"""A damaged checkpoint is never trained from: each records its files' sha256 in its state file
(written last); resume checks them, falls back to the newest intact checkpoint with a warning
naming the bad file, and with none intact says so (exit 2) without touching status.json."""

from __future__ import annotations

import json

import pytest

from conftest import Explodes, tiny_experiment
from stancerun.cli.main import main


@pytest.fixture
def failed_run(tmp_path, tiny_bert, stance_data, exploding, capsys):
    extra = "[[callbacks]]\nuse = \"explodes\"\nstep = 8\nmessage = \"the disk filled up\"\n\n[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    path = tiny_experiment(tmp_path, tiny_bert, "lora", extra=extra)
    run = tmp_path / "run"
    assert main(["run", str(path), "--output-dir", str(run), "--set", "training.logging_steps=1",
                 "--set", "training.save_strategy=\"steps\"", "--set", "training.save_steps=3"]) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-3", "step-6"]
    Explodes.armed = False
    capsys.readouterr()
    return run


def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(failed_run, capsys):
    state = json.loads((failed_run / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert set(state["checksums"]) >= {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors"}
    bad = failed_run / "checkpoints" / "step-6" / "optimizer.safetensors"
    truncate(bad)
    assert main(["resume", str(failed_run)]) == 0
    err = capsys.readouterr().err
    assert "skipping a damaged checkpoint" in err and "optimizer.safetensors" in err and "step-6" in err
    assert "resuming from step-3" in err
    assert json.loads((failed_run / "status.json").read_text())["status"] == "finished"
    assert (failed_run / "results.json").is_file()


def test_no_intact_checkpoint_exits_2_naming_them_and_leaves_status_alone(failed_run, capsys):
    truncate(failed_run / "checkpoints" / "step-6" / "trainable.safetensors")
    (failed_run / "checkpoints" / "step-3" / "rng.safetensors").write_bytes(b"garbage")
    status = (failed_run / "status.json").read_bytes()
    assert main(["resume", str(failed_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no intact checkpoint" in err
    assert "step-6/trainable.safetensors" in err and "step-3/rng.safetensors" in err
    assert (failed_run / "status.json").read_bytes() == status
    assert not (failed_run / "results.json").exists()


def test_checkpoints_without_checksums_still_resume(failed_run, capsys):
    """Written before checksums existed: trusted as before, though a truncated file is still caught
    when its safetensors header no longer fits the file."""
    for step in ("step-3", "step-6"):
        file = failed_run / "checkpoints" / step / "trainer_state.json"
        state = json.loads(file.read_text())
        del state["checksums"]
        file.write_text(json.dumps(state))
    truncate(failed_run / "checkpoints" / "step-6" / "trainable.safetensors")
    assert main(["resume", str(failed_run)]) == 0
    err = capsys.readouterr().err
    assert "step-6" in err and "trainable.safetensors" in err and "resuming from step-3" in err
    assert (failed_run / "results.json").is_file()
