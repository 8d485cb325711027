"""A saved run is rebuilt through the plugins that built it (model/stancerun.json), from any
working directory; broken contracts and missing plugins are clear errors, not tracebacks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_experiment
from stancerun.errors import UsageError


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def stancerun_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stancerun", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_lora_run_on_a_relative_model_folder_predicts_from_another_directory(tmp_path, tiny_bert, stance_data):
    shutil.copytree(tiny_bert, tmp_path / "models" / "tiny")
    extra = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    path = tiny_experiment(tmp_path, tmp_path / "models" / "tiny", extra=extra)
    path.write_text(path.read_text().replace(f'name = "{tmp_path / "models" / "tiny"}"', 'name = "models/tiny"'))
    assert 'name = "models/tiny"' in path.read_text()
    done = stancerun_cli("run", path.name, "--output-dir", "run", "--set", "training.num_train_epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["components"]["model"]["options"]["name"] == str((tmp_path / "models" / "tiny").resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = stancerun_cli("predict", run, "--input", run / "predictions.csv", "--output", "out.csv", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    saved, got = read_csv(run / "predictions.csv"), read_csv(elsewhere / "out.csv")
    assert [r["label"] for r in got] == [r["prediction"] for r in saved]
    names = [k for k in saved[0] if k.startswith("prob_")]
    np.testing.assert_allclose([[float(r[k]) for k in names] for r in got],
                               [[float(r[k]) for k in names] for r in saved], atol=1e-5)


class NoRestore:
    """A model object that forgot part of stancerun.contracts.Model."""

    def load(self, labels):
        raise AssertionError("never called: the contract is checked when the object is built")

    def save(self, loaded, directory, model=None, state_dict=None):
        pass


def test_an_object_that_breaks_its_contract_is_named_with_its_plugin(builtin_registry):
    from stancerun.config.experiment import build

    builtin_registry.register("models", "half", lambda: NoRestore(), "halfplug")
    with pytest.raises(UsageError, match=r"model 'half' of plugin 'halfplug' breaks its contract: its factory returned "
                                         r"'NoRestore' without restore\(\), rebuild_options\(\)"):
        build(builtin_registry, "models", {"use": "half"})


RECORD = {"use": "bag", "plugin": "bagplug", "distribution": "bag-stance", "version": "0.3", "options": {}}


def test_rebuilding_without_the_plugin_that_built_the_run_names_its_distribution(builtin_registry):
    from stancerun.components.assembly import rebuild

    with pytest.raises(UsageError, match=r"this run's model 'bag' was built by plugin 'bagplug' \(bag-stance 0.3\); "
                                         r"it is not installed or not allowed here \(pip install bag-stance"):
        rebuild(builtin_registry, "models", RECORD)
    # another plugin's component of the same name is not silently used instead
    builtin_registry.register("models", "bag", lambda: None, "impostor")
    with pytest.raises(UsageError, match=r"but here 'bag' comes from plugin 'impostor'"):
        rebuild(builtin_registry, "models", RECORD)


def test_a_model_directory_from_an_older_layout_is_a_clear_error(tmp_path, capsys):
    from stancerun.cli.main import main

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stancerun.json").write_text(json.dumps({"labels": ["a", "b"], "base_model": "x"}))
    assert main(["predict", str(tmp_path), "hello"]) == 2
    assert "saved by an older stancerun" in capsys.readouterr().err
