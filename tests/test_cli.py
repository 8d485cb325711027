"""The command line as a user meets it: exit codes, messages, and no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stancerun.config import tomlio
from stancerun.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, runpy
sys.argv = ["stancerun", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("stancerun", run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate", "datasets", "sklearn") if m in sys.modules)
print("\\nPROBE", json.dumps({"code": code, "heavy": heavy}))
"""


def run_probe(args, cwd=ROOT):
    env = {**os.environ, "STANCERUN_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.rsplit("PROBE", 1)[1])
    return result, done


@pytest.mark.parametrize("args", [["--help"], ["validate", "experiments/lora_r8.toml"], ["plugins"], ["plugins", "--verbose"],
                                  ["plugins", "--json"]],
                         ids=["help", "validate", "plugins", "plugins-verbose", "plugins-json"])
def test_light_commands_import_no_heavy_module(args):
    result, done = run_probe(args)
    assert result["code"] in (0, None), done.stderr
    assert result["heavy"] == [], f"{args} imported {result['heavy']}"


def test_python_dash_m_and_console_script_agree():
    done = subprocess.run([sys.executable, "-m", "stancerun", "validate", "experiments/seed_notebook.toml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert tomlio.loads(done.stdout)["name"] == "seed_notebook"


def test_under_a_launcher_the_exit_keeps_the_code_and_the_output(tmp_path):
    # WORLD_SIZE > 1: the process leaves through os._exit (cli.entry); its output and exit code
    # must survive that.
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1"}
    done = subprocess.run([sys.executable, "-m", "stancerun", "validate", "experiments/seed_notebook.toml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert tomlio.loads(done.stdout)["name"] == "seed_notebook"
    done = subprocess.run([sys.executable, "-m", "stancerun", "validate", str(tmp_path / "missing.toml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "missing.toml" in done.stderr


BROKEN = """
[data]
use = "csv"
train = "t.csv"

[training]
learning_rte = 1e-4
num_train_epochs = "three"

[[metrics]]
use = "acuracy"
"""


def test_three_mistakes_exit_2_and_are_named_in_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "broken.toml").write_text(BROKEN)
    assert main(["validate", "broken.toml"]) == 2
    err = capsys.readouterr().err
    assert "broken.toml: 3 problems" in err
    assert "broken.toml: training.learning_rte: unknown key (did you mean 'learning_rate'?)" in err
    assert "broken.toml: training.num_train_epochs: expected a number > 0, got the string 'three'" in err
    assert "broken.toml: metrics[0].use: unknown metric 'acuracy'" in err and "did you mean 'accuracy'?" in err
    assert "Traceback" not in err


def test_bare_experiment_form_means_run(monkeypatch):
    seen = {}
    from stancerun.cli import run

    monkeypatch.setattr(run, "run", lambda args: seen.setdefault("args", args) and 0)
    assert main(["experiments/lora_r8.toml", "--set", "seed=1"]) == 0
    assert seen["args"].command == "run" and seen["args"].overrides == ["seed=1"]


def test_unexpected_error_has_no_traceback_without_debug(monkeypatch, capsys):
    from stancerun.cli import validate

    def boom(args):
        raise RuntimeError("kaput")

    monkeypatch.setattr(validate, "validate", boom)
    assert main(["validate", "x.toml"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: kaput" in err and "Traceback" not in err and "--debug" in err
    assert main(["--debug", "validate", "x.toml"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_missing_file_exits_2(capsys):
    assert main(["validate", "nope.toml"]) == 2
    assert "nope.toml: experiment file not found" in capsys.readouterr().err


def test_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2


def test_plugins_lists_every_builtin_under_its_plugin(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for text in ("stancerun", "adapters", "frozen, full, lora", "csv, hf, inline, jsonl", "early_stopping"):
        assert text in out


def test_predict_on_something_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "some text"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_run_refuses_a_non_empty_output_dir(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["run", str(ROOT / "experiments/seed_notebook.toml"), "--output-dir", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
