from __future__ import annotations

import os
import tempfile

import pytest

# Nothing in the test suite may reach a model or dataset hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
# evaluate copies every metric script it loads (tests/test_hf_evaluate.py) into its modules cache:
# the suite's copies go to a folder of its own, not the user's ~/.cache.
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="stancerun-tests-hf-modules-")


@pytest.fixture(autouse=True)
def _only_builtin_plugins(monkeypatch):
    """Tests see the built-in plugins only, whatever else is installed, and a fresh registry."""
    from stancerun.registry import discovery as plugins

    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def builtin_registry():
    from stancerun.registry.discovery import get_registry

    return get_registry()


# -- tiny models and data, made on the fly ----------------------------------------------
# One copy, in stancerun.testing (the pytest plugin for plugin authors); the tests import these from here.
from pathlib import Path  # noqa: E402

from stancerun.testing import (LABELS, TARGETS, VOCAB, save_tiny_model, stance_rows, write_csv,  # noqa: E402,F401
                               write_tiny_data)


@pytest.fixture(scope="session")
def tiny_bert(stancerun_tiny_model):
    """The kit's tiny BERT (stancerun.testing's stancerun_tiny_model): made once per session."""
    return stancerun_tiny_model


@pytest.fixture(scope="session")
def served_run(tmp_path_factory, tiny_bert):
    """One finished tiny run (one epoch, no pairs), trained once for every serve test: they only read it."""
    from test_serve import train

    return train(tmp_path_factory.mktemp("served-run"), tiny_bert)


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert")


@pytest.fixture
def stance_data(tmp_path):
    """train.csv (90 rows) and test.csv (30 rows) with text, target and label columns."""
    return write_tiny_data(tmp_path / "data")


def tiny_experiment(tmp_path: Path, model_dir: Path, adapter: str = "lora", extra: str = "", data: str = "") -> Path:
    """An experiment file over the tiny model and the stance data, fast enough for a unit test."""
    adapter_table = {"lora": 'use = "lora"\nr = 4\nalpha = 8\n', "full": 'use = "full"\n', "frozen": 'use = "frozen"\n'}[adapter]
    text = f"""
name = "tiny"
seed = 7
output_dir = "runs"

[data]
use = "csv"
train = "data/train.csv"
test = "data/test.csv"
labels = ["support", "neutral", "oppose"]
{data}

[model]
use = "hf"
name = "{model_dir}"
max_length = 32

[adapter]
{adapter_table}

[training]
num_train_epochs = 3
per_device_train_batch_size = 8
per_device_eval_batch_size = 16
learning_rate = {"5e-3" if adapter != "full" else "1e-3"}
eval_strategy = "epoch"
save_strategy = "epoch"
logging_steps = 5
metric_for_best_model = "accuracy"

[[metrics]]
use = "accuracy"

[[metrics]]
use = "f1"
average = "macro"
{extra}
"""
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


# -- a run that fails mid-training ---------------------------------------------------------------
class Explodes:
    """``[[callbacks]] use = "explodes"``: raises ``message`` at optimizer step ``step`` while armed
    (the resume that follows runs with it disarmed: ``Explodes.armed = False``)."""

    armed = True

    def __init__(self, step: int, message: str):
        self.step, self.message = step, message

    def on_log(self, run, logs):
        if run.global_step == self.step and Explodes.armed:
            raise RuntimeError(self.message)


def explodes(*, step: int, message: str = "the GPU caught fire"):
    return Explodes(step, message)


@pytest.fixture
def exploding(stancerun_plugin, monkeypatch):
    """The ``explodes`` callback registered through the kit's plugin door, armed; the registry."""
    import types

    import stancerun

    plugin = types.ModuleType("exploding_plugin")

    @stancerun.hookimpl
    def stancerun_register_callbacks(register):
        register("explodes", explodes)

    plugin.stancerun_register_callbacks = stancerun_register_callbacks
    monkeypatch.setattr(Explodes, "armed", True)
    return stancerun_plugin(plugin, name="explodes")
