"""A corpus of bad input, one case per kind of mistake a new user makes.

SPEC §2: a wrong experiment, data file or command line exits 2 with one clear message (file,
key path or row, what is wrong) and no traceback. `cli.validate.load_checked` runs the config
validation and the preflight (data, model, metric names) before any run directory exists, so
`run` must fail exactly like `validate` and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stancerun.cli.main import main

GOOD_ROWS = "text,label\ngood plan,support\nbad plan,oppose\nthe table,neutral\ngreat idea,support\nawful idea,oppose\na chair,neutral\n"


def experiment(model: Path, *, data: str = "", model_name: str | None = None,
               metrics: str = 'use = "accuracy"', best: str = "accuracy", top: str = "", tail: str = "") -> str:
    """A small, otherwise valid experiment as a user would write it; each case breaks one thing."""
    name = json.dumps(model_name if model_name is not None else str(model))  # a TOML basic string
    return f"""{top}
name = "bad"
output_dir = "runs"

[data]
use = "csv"
train = "train.csv"
labels = ["support", "neutral", "oppose"]
{data}

[model]
name = {name}
max_length = 32

[training]
num_train_epochs = 1
metric_for_best_model = "{best}"

[[metrics]]
{metrics}
{tail}
"""


@dataclass
class Case:
    files: dict  # name -> str (UTF-8) or bytes, written into tmp_path
    expect: list  # substrings the error message must contain
    experiment: str = "x.toml"
    args: list = field(default_factory=list)  # extra command-line arguments (--set ...)


def metric_bleu(model):  # (a) a best-model metric no [[metrics]] produces
    return Case({"x.toml": experiment(model, best="bleu"), "train.csv": GOOD_ROWS},
                ["x.toml: training.metric_for_best_model", "metric 'bleu' is not among the keys", "accuracy"])


def latin1_csv(model):  # (b) a spreadsheet saved as Latin-1
    data = "text,label\nMontréal is great,support\nbad plan,oppose\nthe table,neutral\n".encode("latin-1")
    return Case({"x.toml": experiment(model), "train.csv": data},
                ["train.csv, line 2, column 6", "not UTF-8 (bytes e9", "re-save the file as UTF-8", "iconv"])


def no_such_model(model):  # (c) a hub id that is nowhere (HF_HUB_OFFLINE=1)
    return Case({"x.toml": experiment(model, model_name="no-such-org/no-such-model-xyz"), "train.csv": GOOD_ROWS},
                ["x.toml: model", ("model 'no-such-org/no-such-model-xyz' not found: not a folder, not a packaged "
                                   "model, not in the Hugging Face cache (offline)")])


def duplicate_labels(model):  # (d) the labels list repeats a label
    text = experiment(model).replace('["support", "neutral", "oppose"]', '["support", "support", "oppose"]')
    return Case({"x.toml": text, "train.csv": GOOD_ROWS}, ["x.toml: data", "'support' listed more than once"])


def early_stopping_metric(model):  # (e) a callback monitors a key no metric produces
    callback = '[[callbacks]]\nuse = "early_stopping"\nmetric = "f1_macro"\n'
    return Case({"x.toml": experiment(model, tail=callback), "train.csv": GOOD_ROWS},
                ["x.toml: callbacks[0] (early_stopping)", "metric 'f1_macro' is not among the keys"])


def missing_column(model):
    return Case({"x.toml": experiment(model), "train.csv": GOOD_ROWS.replace("text,label", "sentence,label")},
                ["train.csv: no column 'text' (columns: sentence, label)"])


def label_outside_labels(model):  # every bad row is reported, not just the first
    rows = GOOD_ROWS + "maybe so,maybe\nwho knows,perhaps\n"
    return Case({"x.toml": experiment(model), "train.csv": rows},
                ["train.csv, row 8: label 'maybe' is not one of the experiment's labels",
                 "train.csv, row 9: label 'perhaps' is not one of"])


def empty_split(model):  # header only
    return Case({"x.toml": experiment(model), "train.csv": "text,label\n"}, ["train.csv: no rows"])


def empty_text(model):
    rows = GOOD_ROWS + ",support\n"
    return Case({"x.toml": experiment(model), "train.csv": rows},
                ["train.csv, row 8: empty or missing text in column 'text'"])


def unknown_top_level_key(model):
    return Case({"x.toml": experiment(model, top='nmae = "typo"'), "train.csv": GOOD_ROWS},
                ["x.toml: nmae: unknown key", "did you mean 'name'?"])


def wrong_type(model):
    return Case({"x.toml": experiment(model).replace("num_train_epochs = 1", 'num_train_epochs = "three"'),
                 "train.csv": GOOD_ROWS},
                ["x.toml: training.num_train_epochs: expected a number > 0, got the string 'three'"])


def unknown_metric(model):
    return Case({"x.toml": experiment(model, metrics='use = "acuracy"'), "train.csv": GOOD_ROWS},
                ["x.toml: metrics[0].use: unknown metric 'acuracy'", "did you mean 'accuracy'?"])


def missing_data_file(model):
    return Case({"x.toml": experiment(model).replace('train = "train.csv"', 'train = "data/trian.csv"')},
                ["x.toml: data.train: file not found", "trian.csv"])


def malformed_toml(model):
    return Case({"x.toml": experiment(model).replace("[training]", "[training"), "train.csv": GOOD_ROWS},
                ["x.toml", "not valid TOML", "line"])


def extends_cycle(model):
    return Case({"x.toml": 'extends = "y.toml"\n' + experiment(model), "y.toml": 'extends = "x.toml"\n',
                 "train.csv": GOOD_ROWS},
                ["extends cycle: x.toml -> y.toml -> x.toml"])


def bad_set(model):  # --set without "="
    return Case({"x.toml": experiment(model), "train.csv": GOOD_ROWS},
                ["--set: training.learning_rate: expected KEY=VALUE"], args=["--set", "training.learning_rate"])


def invalid_jsonl_line(model):
    rows = '{"text": "good plan", "label": "support"}\n{"text": "bad plan", label: "oppose"}\n'
    text = experiment(model).replace('use = "csv"\ntrain = "train.csv"', 'use = "jsonl"\ntrain = "train.jsonl"')
    return Case({"x.toml": text, "train.jsonl": rows}, ["train.jsonl, line 2: not valid JSON"])


def model_folder_without_config(model):
    # Written as a relative folder; the message shows the resolved path.
    return Case({"x.toml": experiment(model, model_name="my-model"), "train.csv": GOOD_ROWS,
                 "my-model/vocab.txt": "[PAD]\n"},
                ["x.toml: model", "model 'my-model': folder", "has no config.json"])


HEADLINE = [metric_bleu, latin1_csv, no_such_model, duplicate_labels, early_stopping_metric]
CASES = HEADLINE + [missing_column, label_outside_labels, empty_split, empty_text, unknown_top_level_key, wrong_type,
                    unknown_metric, missing_data_file, malformed_toml, extends_cycle, bad_set, invalid_jsonl_line,
                    model_folder_without_config]


def write(tmp_path: Path, case: Case) -> None:
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("build", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_input_exits_2_with_a_named_problem_and_leaves_nothing(build, command, tiny_bert, tmp_path, monkeypatch,
                                                                    capsys):
    case = build(tiny_bert)
    write(tmp_path, case)
    monkeypatch.chdir(tmp_path)  # output_dir = "runs" and shown paths are relative to here
    before = tree(tmp_path)

    code = main([command, case.experiment, *case.args])

    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.startswith("error:"), err
    assert "Traceback" not in err
    for text in case.expect:
        assert text in err, f"{text!r} not in:\n{err}"
    assert not (tmp_path / "runs").exists(), "a run directory was created for a bad experiment"
    assert tree(tmp_path) == before, "stray files left behind"


# validate never imports torch, even when it reads the data and looks for the model (SPEC §2). Its
# time is printed for whoever reads the probe, not asserted: speed belongs in benchmarks/.
PROBE = """
import json, sys, time
started = time.perf_counter()
from stancerun.cli.main import main
code = main(json.loads(sys.argv[1]))
elapsed = time.perf_counter() - started
print("PROBE", json.dumps({"code": code, "torch": "torch" in sys.modules, "seconds": elapsed}))
"""


@pytest.mark.parametrize("build", HEADLINE, ids=[c.__name__ for c in HEADLINE])
def test_headline_cases_validate_fast_without_torch(build, tiny_bert, tmp_path):
    case = build(tiny_bert)
    write(tmp_path, case)
    env = {**os.environ, "STANCERUN_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(["validate", case.experiment, *case.args])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(done.stdout.rsplit("PROBE", 1)[1])
    assert result["code"] == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert all(text in done.stderr for text in case.expect), done.stderr
    assert result["torch"] is False, "validate imported torch"
