"""Property-based fuzzing of everything a user hands `validate`: the experiment TOML and the data.

SPEC §2: whatever the input, `validate` exits 0 (and prints TOML that parses) or 2 with one
"error: ..." message; never 1, never a traceback. The data readers raise only UsageError.
Every property has a fixed budget and a fixed seed (derandomize, no example database), so a
run is repeatable (Hypothesis still keeps a cache in .hypothesis/, which git-ignores itself).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import stancerun_data  # the built-in csv/jsonl datasets (RowDataset subclasses)
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stancerun.config import tomlio
from stancerun.cli.main import main
from stancerun.data.rows import read_csv, read_jsonl
from stancerun.errors import UsageError


def fuzz(n: int):
    """Fixed budget, repeatable, no example database; tmp_path is reused across examples."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


LABELS = ["support", "neutral", "oppose"]
GOOD_CSV = "text,label\ngood plan,support\nbad plan,oppose\nthe table,neutral\ngreat idea,support\nawful idea,oppose\na chair,neutral\n"
MODEL = "<tiny_bert>"  # replaced by the fixture's folder

# A valid experiment touching every section, so every key path can be broken.
BASE = {
    "name": "fuzz", "seed": 1, "output_dir": "runs",
    "data": {"use": "csv", "train": "train.csv", "labels": LABELS, "delimiter": ",", "text_column": "text",
             "split": {"test_size": 0.25, "seed": 1, "stratify": True}},
    "model": {"use": "hf", "name": MODEL, "max_length": 32},
    "adapter": {"use": "lora", "r": 4, "alpha": 8},
    "training": {"num_train_epochs": 1, "learning_rate": 1e-3, "eval_strategy": "epoch",
                 "metric_for_best_model": "accuracy"},
    "evaluation": {"baselines": ["majority"], "seeds": [], "bootstrap_resamples": 10},
    "metrics": [{"use": "accuracy"}, {"use": "f1", "average": "macro"}],
    "callbacks": [{"use": "early_stopping", "patience": 1}],
}


def key_paths(value, prefix=()):
    """Every path into a document: table keys and list positions."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found += key_paths(inner, prefix + (key,))
    return found


PATHS = key_paths(BASE)

# Words the core knows, so random documents often get past the first check.
WORDS = ["", " ", "accuracy", "f1_macro", "eval_accuracy", "loss", "csv", "jsonl", "inline", "hf", "lora", "full",
         "frozen", "early_stopping", "f1", "macro", "per_class", "train.csv", "missing.csv", "/", "..", ".",
         "no-such/model", "support", "epoch", "steps", "no", "\x00", "é"]
KEYS = ["use", "name", "extends", "sweep", "train", "validation", "test", "labels", "delimiter", "text_column",
        "label_column", "text_pair_column", "split", "revision", "attn_implementation", "metric", "average",
        "on_leakage", "target_modules", "max_steps", "eval_steps", "seeds", "cv_folds"]

scalars = st.one_of(
    st.text(max_size=12), st.sampled_from(WORDS),
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([0, 1, -1, 2, 8, 10**9]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 0.5, 1.0]),
    st.booleans(), st.dates(), st.datetimes(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=3), max_leaves=6)

# One edit: replace the value at a path, add a key to a table, or delete a key.
edits = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), values),
    st.tuples(st.just("add"), st.sampled_from([(), *PATHS]),
              st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), values)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
)


def base(model: Path) -> dict:
    doc = copy.deepcopy(BASE)
    doc["model"]["name"] = str(model)
    return doc


def apply(doc: dict, edit) -> None:
    op, path, value = edit
    parent = doc
    for part in path[:-1] if op != "add" else path:  # an earlier edit may have replaced this branch
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return
    if op == "add":
        if isinstance(parent, dict):
            parent[value[0]] = value[1]
        return
    key = path[-1]
    try:
        if op == "set":
            parent[key] = value
        else:
            del parent[key]
    except (KeyError, IndexError, TypeError):
        pass


def validate(path: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["validate", str(path)])  # main turns every exception into an exit code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_outcome(code: int, out: str, err: str) -> None:
    assert code in (0, 2), f"exit {code} (a core bug, not a user error):\n{err}"
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error:"), err
    else:
        tomlio.loads(out)  # the resolved experiment can be saved and run again


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_bert):
    (tmp_path / "train.csv").write_text(GOOD_CSV)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_base_experiment_is_valid(workdir, tiny_bert, capsys):
    """The fuzzers start from a valid experiment: otherwise they test nothing past the first error."""
    (workdir / "x.toml").write_text(tomli_w.dumps(base(tiny_bert)))
    code, _, err = validate(workdir / "x.toml", capsys)
    assert code == 0, err


# -- (i) the experiment file ------------------------------------------------------------------
@fuzz(800)
@given(st.lists(edits, min_size=1, max_size=3))
def test_random_values_at_random_key_paths(workdir, tiny_bert, capsys, edit_list):
    doc = base(tiny_bert)
    for edit in edit_list:
        apply(doc, edit)
    (workdir / "x.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    assert_clean_outcome(*validate(workdir / "x.toml", capsys))


@fuzz(300)
@given(st.integers(min_value=0), st.text(max_size=20) | st.sampled_from(["[", "]]", "=", '"', "\n[data]\n", "x =", "\\"]))
def test_random_text_inserted_into_a_valid_file(workdir, tiny_bert, capsys, position, junk):
    text = tomli_w.dumps(base(tiny_bert))
    position %= len(text) + 1
    (workdir / "x.toml").write_text(text[:position] + junk + text[position:], encoding="utf-8")
    assert_clean_outcome(*validate(workdir / "x.toml", capsys))


@fuzz(150)
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_random_bytes_inserted_into_a_valid_file(workdir, tiny_bert, capsys, position, junk):
    # A file saved in another encoding is a user error too (exit 2), as it is for data files.
    data = tomli_w.dumps(base(tiny_bert)).encode()
    position %= len(data) + 1
    (workdir / "x.toml").write_bytes(data[:position] + junk + data[position:])
    assert_clean_outcome(*validate(workdir / "x.toml", capsys))


SWEEP_KEYS = ["seed", "training.learning_rate", "adapter.r", "model.max_length", "metrics.0.use", "metrics.use",
              "metrics.9.use", "callbacks.0.patience", "seed.x", "data.split.seed", "training", "evaluation.x.y"]


sweep_values = st.one_of(st.lists(st.sampled_from([1, 2, 4, 1e-3, "accuracy", "f1", True]), min_size=1, max_size=2),
                         st.lists(values, max_size=2), values)


@fuzz(300)
@given(st.dictionaries(st.sampled_from(SWEEP_KEYS) | st.text(max_size=8), sweep_values, min_size=1, max_size=2))
def test_random_sweep_tables(workdir, tiny_bert, capsys, sweep):
    # [sweep] keys are dotted paths into the experiment; every combination is validated.
    doc = base(tiny_bert)
    doc["sweep"] = sweep
    (workdir / "x.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    assert_clean_outcome(*validate(workdir / "x.toml", capsys))


# -- (ii) the data ----------------------------------------------------------------------------
def write_experiment(workdir: Path, model: Path, train: str = "train.csv", use: str = "csv") -> Path:
    doc = base(model)
    doc["data"].update(use=use, train=train)
    if use == "jsonl":
        del doc["data"]["delimiter"]
    path = workdir / "x.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


# Mostly plausible cells, sometimes noise: quotes, separators, newlines, NULs, bytes that are not UTF-8.
cells = st.one_of(st.text(max_size=12), st.sampled_from(LABELS + ["", " ", '"', '""', ",", "\n", "\r\n", "\x00"]))
noise = st.one_of(cells.map(str.encode), st.binary(max_size=6),
                  st.sampled_from([b"\xe9", b"\xff\xfe", b"\x00", b'"', b"\xef\xbb\xbf", b"\r"]))


@st.composite
def near_valid_csv(draw) -> bytes:
    """A header and rows of (text, label), quoted or not; about one cell in eight is noise."""
    header = draw(st.sampled_from([b"text,label", b"\xef\xbb\xbftext,label", b"label,text", b"text,label,extra"]))
    lines = [header]
    for _ in range(draw(st.integers(0, 8))):
        row = [draw(st.text(min_size=1, max_size=12)).encode(), draw(st.sampled_from(LABELS)).encode()]
        row += [b"extra"] * draw(st.integers(0, 1))
        for i in range(len(row)):
            if draw(st.integers(0, 7)) == 0:
                row[i] = draw(noise)
            if draw(st.booleans()):
                row[i] = b'"' + row[i].replace(b'"', b'""') + b'"'
        lines.append(b",".join(row))
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"]))


@fuzz(300)
@given(st.binary(max_size=200))
def test_random_bytes_as_the_training_csv(workdir, tiny_bert, capsys, data):
    (workdir / "train.csv").write_bytes(data)
    assert_clean_outcome(*validate(write_experiment(workdir, tiny_bert), capsys))


@fuzz(400)
@given(near_valid_csv())
def test_near_valid_csv_as_the_training_csv(workdir, tiny_bert, capsys, data):
    (workdir / "train.csv").write_bytes(data)
    assert_clean_outcome(*validate(write_experiment(workdir, tiny_bert), capsys))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | cells,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cells, inner, max_size=3),
                           max_leaves=5)


@st.composite
def jsonl_line(draw) -> bytes:
    """Usually a {"text", "label"} object; sometimes another JSON value, raw text or raw bytes."""
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(noise)
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    row = {"text": draw(st.text(min_size=1, max_size=12) if kind > 2 else json_values),
           "label": draw(st.sampled_from(LABELS) if kind > 3 else json_values)}
    return json.dumps(row, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def near_valid_jsonl(draw) -> bytes:
    lines = [draw(jsonl_line()) for _ in range(draw(st.integers(0, 8)))]
    return draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"])).join(lines)


@fuzz(300)
@given(near_valid_jsonl())
def test_near_valid_jsonl_as_the_training_file(workdir, tiny_bert, capsys, data):
    (workdir / "train.jsonl").write_bytes(data)
    assert_clean_outcome(*validate(write_experiment(workdir, tiny_bert, "train.jsonl", "jsonl"), capsys))


def returns_or_usage_error(call) -> None:
    """The readers' contract: a value, or a UsageError that the CLI prints as exit 2."""
    try:
        call()
    except UsageError as error:
        assert str(error).strip()


@fuzz(400)
@given(st.binary(max_size=200) | near_valid_csv() | near_valid_jsonl())
def test_data_readers_return_or_raise_usage_error(tmp_path, data):
    csv_path, jsonl_path = tmp_path / "d.csv", tmp_path / "d.jsonl"
    csv_path.write_bytes(data)
    jsonl_path.write_bytes(data)
    returns_or_usage_error(lambda: read_csv(str(csv_path)))
    returns_or_usage_error(lambda: read_jsonl(str(jsonl_path)))
    for labels in (LABELS, None):  # given labels, and labels read from the data
        csv_set = stancerun_data.csv(train=str(csv_path), labels=labels)
        jsonl_set = stancerun_data.jsonl(train=str(jsonl_path), labels=labels)
        for dataset in (csv_set, jsonl_set):
            returns_or_usage_error(dataset.check)  # problems come back as a list, not as exceptions


# -- what the fuzzers (and reading the code they pointed at) found ------------------------------
# Each input is pinned on its own, so every bug fails by itself, not hidden behind the first
# one a property shrinks to. Expected: exit 2, one "error:" message naming the place.
def _experiment_with(model: Path, line: str) -> str:
    return line + "\n" + tomli_w.dumps(base(model))


FOUND = {
    # config.read_file: the experiment file is decoded without catching UnicodeDecodeError
    "experiment_file_not_utf8": ({"x.toml": lambda m: _experiment_with(m, 'description = "café"').encode("latin-1")},
                                 [], "x.toml"),
    # stancerun_hf.hub_problems offline: try_to_load_from_cache raises HFValidationError on a name
    # that is no repo id (a space, a mistyped folder)
    "model_name_not_a_repo_id": ({}, ["--set", 'model.name="my model"'], "my model"),
    # datasets.read_csv: csv raises TypeError, not csv.Error, for a delimiter that is not one character
    "delimiter_of_two_characters": ({}, ["--set", 'data.delimiter=";;"'], "delimiter"),
    # options._check_path: Path.resolve() raises ValueError on an embedded NUL
    "nul_in_a_file_option": ({}, ["--set", 'data.train="a\\u0000b.csv"'], "data.train"),
    # config.read_file: (path.parent / extends).resolve() raises ValueError on an embedded NUL
    "nul_in_extends": ({"x.toml": lambda m: _experiment_with(m, 'extends = "a\\u0000b.toml"')}, [], "extends"),
    # sweepplan.set_dotted: int("use") on a list, item assignment on a number, a list position past the end
    "sweep_key_names_a_list_item_by_word": ({}, ["--set", 'sweep={"metrics.use"=["f1"]}'], "metrics.use"),
    "sweep_key_goes_into_a_number": ({}, ["--set", 'sweep={"seed.x"=[1]}'], "seed.x"),
    "sweep_list_position_past_the_end": ({}, ["--set", 'sweep={"metrics.9.use"=["f1"]}'], "metrics.9.use"),
    # config.read_file / tomlio.loads: Python's int-size limit and recursion limit raise outside TOMLDecodeError
    "toml_integer_of_5000_digits": ({"x.toml": lambda m: _experiment_with(m, "seed = " + "1" * 5000)}, [], "x.toml"),
    "toml_nested_2000_deep": ({"x.toml": lambda m: _experiment_with(m, "x = " + "[" * 2000)}, [], "x.toml"),
    # config.validate: `{**default, **value}` merges the list default of [[metrics]]/[[callbacks]] into a
    # table written with single brackets and no `use` -> TypeError
    "callbacks_as_a_table_without_use": ({"x.toml": lambda m: tomli_w.dumps(
        {k: v for k, v in base(m).items() if k != "callbacks"}) + "\n[callbacks]\npatience = 2\n"}, [], "callbacks"),
    # datasets.read_jsonl: json.loads raises ValueError (int-size limit), not JSONDecodeError
    "jsonl_integer_of_5000_digits": ({"train.jsonl": lambda m: '{"text": "a", "label": %s}\n' % ("1" * 5000)},
                                     ["--set", "data.use=jsonl", "--set", "data.train=train.jsonl"], "train.jsonl"),
}


@pytest.mark.parametrize("name", FOUND)
def test_found_inputs_exit_2_with_a_message(name, workdir, tiny_bert, capsys):
    files, args, where = FOUND[name]
    doc = base(tiny_bert)
    if "data.use=jsonl" in args:
        del doc["data"]["delimiter"]  # a jsonl dataset has no delimiter option
    (workdir / "x.toml").write_text(tomli_w.dumps(doc))
    for file, make in files.items():
        content = make(tiny_bert)
        (workdir / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    capsys.readouterr()
    code = main(["validate", "x.toml", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and "Traceback" not in err, err
    assert where in err, err
