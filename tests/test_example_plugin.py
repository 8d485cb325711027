"""The example plugin package, examples/stancerun-acme (the template docs/writing-plugins.md starts
from), works as its users will use it: installed, its own tests pass, and its experiment trains,
predicts and evaluates through the real CLI, each command in a fresh process.

The subprocesses find the plugin through its installed entry point, so it must be installed:
`pip install -e examples/stancerun-acme --no-deps` (.ci/run does it). Without it these tests are
skipped, unless STANCERUN_REQUIRE_EXAMPLE_PLUGIN=1 (set by CI), which makes that a failure.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stancerun.registry.discovery import ALLOW_ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "stancerun-acme"
EXPERIMENT = EXAMPLE / "experiments" / "acme.toml"
DATA = EXAMPLE / "data"
DISTRIBUTION = "stancerun-acme"
REQUIRE_ENV = "STANCERUN_REQUIRE_EXAMPLE_PLUGIN"
LABELS = ["support", "neutral", "oppose"]
EVENTS = {"on_train_begin", "on_log", "on_evaluate", "on_save", "on_train_end"}


@pytest.fixture(scope="module")
def env() -> dict:
    """The environment of the subprocesses: the example plugin installed and allowed."""
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        why = (f"the example plugin '{DISTRIBUTION}' is not installed: run `pip install -e examples/stancerun-acme "
               "--no-deps` (a fresh process finds plugins through installed entry points only)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1, but {why}", pytrace=False)
        pytest.skip(why)
    # conftest.py limits this process to the built-in plugins; the subprocesses need the example's.
    return {**os.environ, ALLOW_ENV: DISTRIBUTION, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(env: dict, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory) -> Path:
    """`stancerun run` on the example's experiment: every component of the plugin in one run."""
    out = tmp_path_factory.mktemp("acme") / "run"
    run(env, "-m", "stancerun", "run", EXPERIMENT, "--output-dir", out)
    return out


def test_the_example_package_passes_its_own_tests(env):
    done = run(env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/stancerun-acme/tests")
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"skipped|failed|error", summary), summary


def test_the_example_experiment_runs_on_the_cli(trained):
    results = json.loads((trained / "results.json").read_text())
    for split in ("final", "test"):  # the plugin's metric, next to the built-in ones
        assert {"accuracy", "f1_macro", "acme_balanced_error"} <= set(results[split]), split
    assert results["final"]["accuracy"] > results["baseline"]["accuracy"]
    assert set(results["baselines"]) == {"majority", "acme_lexicon"}  # the plugin's baseline, scored
    assert "acme_balanced_error" in results["baselines"]["acme_lexicon"]
    assert "| acme_lexicon |" in (trained / "report.md").read_text()

    events = json.loads((trained / "acme_events.json").read_text())  # the plugin's callback
    assert {e["event"] for e in events} == EVENTS

    env_record = json.loads((trained / "environment.json").read_text())
    assert any(p["distribution"] == DISTRIBUTION and p["error"] is None for p in env_record["plugins"])
    components = json.loads((trained / "model" / "stancerun.json").read_text())["components"]
    assert (components["data"]["use"], components["model"]["use"]) == ("acme_jsonl", "acme_bag")
    assert components["model"]["distribution"] == DISTRIBUTION
    assert sorted(p.name for p in (trained / "model").iterdir()) == ["acme_bag.json", "acme_bag.safetensors",
                                                                     "stancerun.json"]


def test_predict_on_the_cli_reproduces_the_run(trained, env, tmp_path):
    out = tmp_path / "predicted.csv"
    run(env, "-m", "stancerun", "predict", trained, "--input", DATA / "validation.jsonl", "--output", out)
    saved, predicted = read_csv(trained / "predictions.csv"), read_csv(out)  # the validation split, in file order
    assert len(predicted) == len(saved) == 15
    assert [r["label"] for r in predicted] == [r["prediction"] for r in saved]
    for got, want in zip(predicted, saved):
        for label in LABELS:
            assert float(got[f"prob_{label}"]) == pytest.approx(float(want[f"prob_{label}"]), abs=1e-6)

    done = run(env, "-m", "stancerun", "predict", trained, "Yes to the dog park, well done council!",
               "--pair", "dog park")
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["target"] == "dog park" and row["label"] in LABELS
    assert sum(row["probabilities"].values()) == pytest.approx(1.0)


def test_evaluate_on_the_cli_reads_the_file_through_the_plugin(trained, env):
    # The test file's labels are FAVOR/NONE/AGAINST: only the plugin's dataset (its label map) reads it right.
    done = run(env, "-m", "stancerun", "evaluate", trained, "--data", DATA / "test.jsonl")
    assert "acme_balanced_error" in done.stdout
    (folder,) = (trained / "evaluations").iterdir()
    evaluated = json.loads((folder / "results.json").read_text())
    assert evaluated["examples"] == 15
    test = json.loads((trained / "results.json").read_text())["test"]  # the run's own scores on the same file
    for key in ("accuracy", "f1_macro", "acme_balanced_error"):
        assert evaluated["metrics"][key] == pytest.approx(test[key], abs=1e-6), key
