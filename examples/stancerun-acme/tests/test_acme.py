"""Tests of the stancerun-acme plugin, each through the door stancerun itself uses.

The fixtures (stancerun_plugin, stancerun_experiment, stancerun_run) come from stancerun.testing,
which pytest loads wherever stancerun is installed: no conftest.py. See docs/testing-plugins.md.
Run them with `python -m pytest` from the package root.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stancerun
import stancerun_acme
from stancerun import ConfigError, Examples, UsageError
from stancerun.testing import build, load_experiment, predict

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "acme.toml"
DATA = ROOT / "data"
DISTRIBUTION = "stancerun-acme"
PLUGIN = "stancerun_acme"  # the entry-point name in pyproject.toml
LABELS = ["support", "neutral", "oppose"]
LABEL_MAP = {"FAVOR": "support", "NONE": "neutral", "AGAINST": "oppose"}
COMPONENTS = {"datasets": "acme_jsonl", "models": "acme_bag", "metrics": "acme_balanced_error",
              "callbacks": "acme_events", "baselines": "acme_lexicon"}


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture
def registry(stancerun_plugin):
    """The plugin, registered for this test as an installed one would be. Under its entry-point
    name, distribution and version, so that a run trained here is one an installed copy (in
    another process: `stancerun predict`) rebuilds without a warning."""
    return stancerun_plugin(stancerun_acme, name=PLUGIN, distribution=DISTRIBUTION,
                            version=installed_version() or "0.0.0")


def dataset_table(**options) -> dict:
    return {"use": "acme_jsonl", "train": str(DATA / "train.jsonl"), "validation": str(DATA / "validation.jsonl"),
            "test": str(DATA / "test.jsonl"), "target_field": "target", "label_map": LABEL_MAP, "labels": LABELS,
            **options}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def probabilities(rows: list[dict]) -> np.ndarray:
    return np.array([[float(row[f"prob_{label}"]) for label in LABELS] for row in rows])


# -- registration ----------------------------------------------------------------------------

def test_registers_one_component_of_each_kind(registry):
    for kind, name in COMPONENTS.items():
        assert [c.name for c in registry.components[kind].values() if c.plugin == PLUGIN] == [name], kind
    assert registry.plugin(PLUGIN).error is None


def test_importing_the_plugin_does_not_import_torch():
    # `stancerun validate` and `stancerun plugins` import every plugin: they must stay fast.
    code = "import sys, stancerun_acme; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_experiment_options_are_checked_against_the_factories(registry):
    config = load_experiment(EXPERIMENT).config
    assert config["model"] == {"use": "acme_bag", "dim": 32, "buckets": 4096, "max_length": 64, "seed": 0}
    assert config["data"]["label_map"] == LABEL_MAP

    with pytest.raises(ConfigError) as error:
        load_experiment(EXPERIMENT, ["data.text_field=3", "model.dim=0", "evaluation.baselines=[{use='acme_lexicon',"
                                     "size=0}]"])
    assert sorted(p.key for p in error.value.problems) == ["data.text_field", "evaluation.baselines[0].size",
                                                           "model.dim"]


# -- dataset ----------------------------------------------------------------------------------

def test_dataset_reads_jsonl_through_its_label_map(registry):
    dataset = build(registry, "datasets", dataset_table())
    splits = dataset.load()
    assert splits.labels == LABELS
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (48, 15, 15)
    assert set(splits.train.pairs) == {"bike lane", "night market", "dog park"}
    # `stancerun evaluate --data FILE` reads new files with read(): the label map applies there too.
    assert dataset.read(str(DATA / "test.jsonl"), LABELS).labels == splits.test.labels


def test_dataset_problems_name_the_file_and_row(registry, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "target": "dog park", "label": "FAVOR"}\n'
                   '{"text": "hmm", "target": "dog park", "label": "MAYBE"}\n', encoding="utf-8")
    problems, _ = build(registry, "datasets", dataset_table(train=str(bad), validation=None, test=None)).check()
    assert len(problems) == 1 and "bad.jsonl, row 2" in problems[0] and "'MAYBE'" in problems[0]


# -- metric -----------------------------------------------------------------------------------

def test_balanced_error(registry):
    compute = build(registry, "metrics", {"use": "acme_balanced_error"})
    pred = stancerun.EvalPrediction(
        logits=[[2.0, 0.1, 0.0], [0.1, 2.0, 0.0], [0.0, 0.1, 2.0], [2.0, 0.0, 0.1]],  # predicts 0, 1, 2, 0
        labels=[0, 1, 2, 2], label_names=LABELS)
    assert compute(pred) == {"acme_balanced_error": pytest.approx(1 - (1 + 1 + 0.5) / 3)}
    # The vectorised twin gives the same number, for a batch of confusion matrices at once.
    cm = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    batch = compute.from_confusion(np.stack([cm, np.eye(3)]), LABELS)["acme_balanced_error"]
    np.testing.assert_allclose(batch, [1 - 2.5 / 3, 0.0])


# -- baseline ---------------------------------------------------------------------------------

def test_lexicon_baseline_fits_predicts_and_survives_save_restore(registry, tmp_path):
    splits = build(registry, "datasets", dataset_table()).load()
    baseline = build(registry, "baselines", {"use": "acme_lexicon"})
    baseline.fit(splits.train, LABELS)
    scores = baseline.predict(splits.validation)
    assert scores.shape == (15, 3)
    assert (scores.argmax(1) == np.array(splits.validation.labels)).mean() > 0.5  # chance is 1/3

    baseline.save(tmp_path / "saved")
    assert [p.suffix for p in (tmp_path / "saved").iterdir()] == [".json"]  # JSON, never pickle
    fresh = build(registry, "baselines", {"use": "acme_lexicon"})  # restore gets a fresh object
    fresh.restore(tmp_path / "saved", LABELS)
    np.testing.assert_array_equal(fresh.predict(splits.validation), scores)


def test_lexicon_baseline_with_given_keywords(registry):
    train = Examples(["a", "b", "c"], [0, 1, 2])
    baseline = build(registry, "baselines", {"use": "acme_lexicon", "keywords": {"support": ["love"],
                                                                                 "oppose": ["hate"]}})
    baseline.fit(train, LABELS)
    assert baseline.predict(Examples(["I LOVE it", "I hate it"], [0, 0])).argmax(1).tolist() == [0, 2]

    wrong = build(registry, "baselines", {"use": "acme_lexicon", "keywords": {"favour": ["love"]}})
    with pytest.raises(UsageError, match="favour"):
        wrong.fit(train, LABELS)


# -- model, on the testing kit's own data (the built-in csv dataset, no text pair) -------------

def test_model_learns_and_reloads(registry, stancerun_experiment, stancerun_run):
    # A [table] in extra_toml replaces the kit's default one (the tiny BERT with LoRA) as a whole.
    path = stancerun_experiment('[model]\nuse = "acme_bag"\n\n[adapter]\nuse = "full"\n',
                                training={"learning_rate": 0.05, "num_train_epochs": 5})
    run = stancerun_run(path)
    results = json.loads((run / "results.json").read_text())
    assert results["final"]["accuracy"] > max(0.6, results["baseline"]["accuracy"])
    assert sorted(p.name for p in (run / "model").iterdir()) == ["acme_bag.json", "acme_bag.safetensors",
                                                                  "stancerun.json"]

    # Rebuilt from model/ alone, through the plugin: the same predictions as the run made.
    saved = read_csv(run / "predictions.csv")
    rows = predict(run, [row["text"] for row in saved], None, batch_size=16)
    assert [row["label"] for row in rows] == [row["prediction"] for row in saved]
    np.testing.assert_allclose([[r["probabilities"][label] for label in LABELS] for r in rows],
                               probabilities(saved), atol=1e-6)


# -- the example experiment: all five components in one run ------------------------------------

def test_the_example_experiment_uses_all_five_components(registry, stancerun_run):
    run = stancerun_run(EXPERIMENT)
    results = json.loads((run / "results.json").read_text())

    # the metric: a score on every evaluated split, for the model and for the baselines
    for scores in (results["final"], results["test"], *results["baselines"].values()):
        assert 0 <= scores["acme_balanced_error"] <= 1
    assert results["final"]["acme_balanced_error"] < results["baseline"]["acme_balanced_error"]  # it learned

    # the baseline: scored beside the model, in results.json and in the report
    assert set(results["baselines"]) == {"majority", "acme_lexicon"}
    assert "| acme_lexicon |" in (run / "report.md").read_text()

    # the callback: every event of the callback protocol, in order
    events = json.loads((run / "acme_events.json").read_text())
    names = [e["event"] for e in events]
    assert set(names) == set(stancerun_acme.callback.EVENTS)
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    assert names.count("on_evaluate") == names.count("on_save") == 10  # one per epoch
    assert [e["checkpoint"] for e in events if e["event"] == "on_save"][0] == "step-6"
    assert events[-1]["final"] == pytest.approx(results["final"])

    # the dataset and the model: recorded, so predict/evaluate can rebuild them
    components = json.loads((run / "model" / "stancerun.json").read_text())["components"]
    assert {components[s]["use"] for s in ("data", "model")} == {"acme_jsonl", "acme_bag"}
    assert {components[s]["plugin"] for s in ("data", "model")} == {PLUGIN}


def test_predict_in_a_new_process_gives_the_same_predictions(registry, stancerun_run, tmp_path):
    env = {**os.environ, "STANCERUN_LOAD_PLUGINS": DISTRIBUTION, "HF_HUB_OFFLINE": "1"}
    # A new process finds plugins only through installed entry points (`pip install -e .` makes one).
    find = f"import importlib.metadata as m; m.distribution({DISTRIBUTION!r})"
    if subprocess.run([sys.executable, "-c", find], cwd=tmp_path, env=env, capture_output=True).returncode:
        pytest.skip(f"{DISTRIBUTION} is not installed: pip install -e .")
    run = stancerun_run(EXPERIMENT)
    out = tmp_path / "predicted.csv"
    done = subprocess.run([sys.executable, "-m", "stancerun", "predict", str(run), "--input",
                           str(DATA / "validation.jsonl"), "--output", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    saved, predicted = read_csv(run / "predictions.csv"), read_csv(out)  # both: the validation split, in order
    assert [row["label"] for row in predicted] == [row["prediction"] for row in saved]
    np.testing.assert_allclose(probabilities(predicted), probabilities(saved), atol=1e-6)
