"""A run directory may come from anyone: no command that loads one runs Python from its model
folder unless given --trust-remote-code; a missing or garbled file in it is one line naming the
file (exit 2), never a traceback (issue 26, rows 8 and 11)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stancerun.cli.main import main
from stancerun.testing import save_tiny_model, tiny_experiment_config, write_experiment, write_tiny_data

EVIL = '''from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import BertConfig, BertForSequenceClassification
class EvilConfig(BertConfig):
    model_type = "evil"
class EvilModel(BertForSequenceClassification):
    config_class = EvilConfig
'''


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (whole weights, so model/ holds config.json; one epoch), trained once for the module; tests copy it."""
    from stancerun.config.experiment import load_experiment
    from stancerun.engine.run import run_experiment

    with pytest.MonkeyPatch.context() as monkeypatch:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.setenv(key, "1")
        root = tmp_path_factory.mktemp("remote-code")
        config = tiny_experiment_config(save_tiny_model(root / "model", "bert"), write_tiny_data(root / "data"))
        path = write_experiment(root / "experiment.toml", config,
                                adapter={"use": "full", "r": None, "alpha": None},
                                training={"num_train_epochs": 1}, evaluation={"baselines": []})
        return run_experiment(load_experiment(path, []), output_dir=str(root / "runs"), quiet=True)


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def ask_for_remote_code(run: Path, marker: Path, in_record: bool = True) -> None:
    """Edit the saved model to ask for remote code: an auto_map to a .py that writes ``marker``."""
    model = run / "model"
    (model / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    if in_record:
        info = json.loads((model / "stancerun.json").read_text())
        info["components"]["model"]["options"]["trust_remote_code"] = True
        (model / "stancerun.json").write_text(json.dumps(info))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:"), err
    assert "Traceback" not in err
    return " ".join(err.split())


REFUSAL = "add --trust-remote-code to allow it"


def test_predict_refuses_a_model_folder_that_asks_for_remote_code(run, tmp_path, capsys):
    marker = tmp_path / "marker"
    ask_for_remote_code(run, marker)
    assert main(["predict", str(run), "a text"]) == 2
    err = one_line_error(capsys)
    assert str(run / "model") in err and REFUSAL in err
    assert not marker.exists(), "the folder's Python ran"

    main(["predict", str(run), "a text", "--trust-remote-code"])  # it may run the code or fail otherwise
    assert REFUSAL not in capsys.readouterr().err


@pytest.mark.parametrize("command", [["export", "{run}", "{out}"], ["export", "{run}", "{out}", "--onnx"],
                                     ["evaluate", "{run}", "--data", "{data}"]])
def test_export_and_evaluate_refuse_it_too(command, run, tmp_path, capsys):
    marker = tmp_path / "marker"
    ask_for_remote_code(run, marker)
    data = tmp_path / "data.csv"
    data.write_text("text,target,label\nyes,x,favor\n")
    args = [a.format(run=run, out=tmp_path / "out", data=data) for a in command]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(run / "model") in err and REFUSAL in err
    assert not marker.exists() and not (tmp_path / "out").exists()

    main([*args, "--trust-remote-code"])
    assert REFUSAL not in capsys.readouterr().err


def test_serve_refuses_it_before_the_server_starts(run, tmp_path, capsys):
    marker = tmp_path / "marker"
    ask_for_remote_code(run, marker)
    assert main(["serve", str(run), "--port", "1"]) == 2  # port 1: were it to start, it could not bind
    err = one_line_error(capsys)
    assert str(run / "model") in err and REFUSAL in err
    assert not marker.exists()


def test_resume_refuses_a_config_that_asks_for_remote_code(run, capsys):
    (run / "results.json").unlink()  # an unfinished run
    config = run / "config.toml"
    config.write_text(config.read_text().replace("trust_remote_code = false", "trust_remote_code = true"))
    assert "trust_remote_code = true" in config.read_text()
    assert main(["resume", str(run)]) == 2
    err = one_line_error(capsys)
    assert str(config) in err and REFUSAL in err


def test_resume_of_a_sweep_refuses_a_config_that_asks_for_remote_code(finished_run, tmp_path, capsys):
    from stancerun.config.experiment import load_experiment
    from stancerun.studies.sweep import create

    experiment = tmp_path / "sweep.toml"
    experiment.write_text((finished_run / "config.toml").read_text().replace("trust_remote_code = false",
                                                                            "trust_remote_code = true")
                          + '\n[sweep]\n"training.learning_rate" = [1e-3, 2e-3]\n')
    out = create(load_experiment(experiment, []), output_dir=str(tmp_path / "sweep")).directory
    assert main(["resume", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out / "config.toml") in err and REFUSAL in err
    assert not list(out.glob("trial-*"))  # nothing ran


def test_an_auto_map_alone_runs_no_code(run, tmp_path, capsys):
    """stancerun.json says false: transformers is told False and uses its own class for the model type."""
    marker = tmp_path / "marker"
    ask_for_remote_code(run, marker, in_record=False)
    code = main(["predict", str(run), "a text"])
    assert not marker.exists(), "transformers ran the folder's code"
    assert code == 0, capsys.readouterr().err


# -- missing and garbled files ----------------------------------------------------------------

def garble(text: str):
    return lambda path: path.write_text(text)


INFO_CASES = {
    "not JSON": (garble("{not json"), "not valid JSON"),
    "not an object": (garble("[1, 2]"), "a JSON list, expected a JSON object"),
    "no labels": (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                                     if k != "labels"})), 'no "labels"'),
    "missing": (lambda p: p.unlink(), "no stancerun.json"),
}


@pytest.mark.parametrize("case", list(INFO_CASES))
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_garbled_or_missing_stancerun_json_is_named(case, command, run, tmp_path, capsys):
    spoil, expected = INFO_CASES[case]
    spoil(run / "model" / "stancerun.json")
    args = ["predict", str(run), "a text"] if command == "predict" else ["export", str(run), str(tmp_path / "out")]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert str(run / "model") in err and expected in err


@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
def test_a_model_folder_without_weights_is_named(command, run, tmp_path, capsys):
    for weights in (run / "model").glob("*.safetensors"):
        weights.unlink()
    data = tmp_path / "data.csv"
    data.write_text("text,target,label\nyes,x,favor\n")
    args = {"predict": ["predict", str(run), "a text"], "export": ["export", str(run), str(tmp_path / "out"), "--merge"],
            "evaluate": ["evaluate", str(run), "--data", str(data)]}[command]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert f"{run / 'model'}: no weights (*.safetensors)" in err


def test_a_run_without_its_model_folder_is_named(run, tmp_path, capsys):
    shutil.rmtree(run / "model")
    assert main(["export", str(run), str(tmp_path / "out"), "--merge"]) == 2
    assert str(run) in one_line_error(capsys)
    assert main(["predict", str(run), "a text"]) == 2
    assert str(run) in one_line_error(capsys)


@pytest.mark.parametrize("name, text, expected", [("config.toml", "name = [", "not valid TOML"),
                                                  ("results.json", "{oops", "not valid JSON"),
                                                  ("results.json", "3", "a JSON int, expected")])
def test_garbled_config_or_results_are_named_by_compare_and_export(name, text, expected, run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (run / name).write_text(text)
    assert main(["compare", str(run), str(other)]) == 2
    err = one_line_error(capsys)
    assert str(run / name) in err and expected in err
    assert main(["export", str(run), str(tmp_path / "out"), "--merge"]) == 2
    err = one_line_error(capsys)
    assert str(run / name) in err and expected in err
