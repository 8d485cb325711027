"""stancerun.testing: pytest fixtures for people who write stancerun plugins.

Installing stancerun installs this pytest plugin (entry-point group ``pytest11``), so in any
project where stancerun is installed these fixtures are there, without a ``conftest.py``.
Every fixture name starts with ``stancerun_``, so none collides with your own fixtures.
Nothing here needs a network: the model and the data are made on the fly, and the fixtures
that load models set ``HF_HUB_OFFLINE=1`` (and ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``)
for the test.

Fixtures
--------

``stancerun_tiny_model`` (session)
    A directory (``pathlib.Path``) with a tiny 2-layer BERT encoder (hidden size 32, no
    classification head: the head is new at load time, as with a real pretrained checkpoint)
    and a word-level tokenizer over :data:`VOCAB`, saved with ``save_pretrained``. Made once
    per test session, offline, in well under a second. Use it as ``[model] name``.

``stancerun_tiny_data``
    A dict of paths to labelled stance rows (columns ``text``, ``target``, ``label``; labels
    ``support``, ``neutral``, ``oppose``; the words of a text tell its label, so a model can
    learn it in a few epochs): ``{"train": .../train.csv (90 rows), "test": .../test.csv (30 rows)}``.
    The validation split is carved from train, as for any experiment without ``validation``.

``stancerun_experiment``
    A factory: ``stancerun_experiment(extra_toml="", **overrides) -> Path`` writes an experiment
    file over the tiny model and the tiny data into the test's ``tmp_path`` and returns its path.
    By default it is small and fast: 3 epochs, batches of 8, LoRA with ``r = 4``, metrics
    ``accuracy`` and ``f1`` (macro), ``metric_for_best_model = "accuracy"``, a test split,
    ``[evaluation]`` with no bootstrap, no plots and only the ``majority`` baseline, and
    ``output_dir`` inside ``tmp_path`` (see :func:`tiny_experiment_config` for all of it).

    - ``extra_toml``: TOML text merged over the defaults. A table in it (``[adapter]``,
      ``[training]``, ``[evaluation]``, ...) **replaces** the default table as a whole; an array of
      tables (``[[metrics]]``, ``[[callbacks]]``) is **appended** to the default one; a top-level
      key (``seed = 3``) replaces the default.
    - ``**overrides``: applied last. ``name="x"``, ``seed=3``: top-level keys. A dict merges
      into the table of that name, key by key (``training={"num_train_epochs": 1}``); a list
      replaces (``metrics=[{"use": "my_metric"}]``); ``None`` removes the key or the table
      (``evaluation=None``).

    The file is written and not validated, so it can also be a bad file for testing your
    plugin's error messages. Each call in a test writes a new file.

``stancerun_plugin``
    A factory: ``stancerun_plugin(module_or_object, name="myplugin", *, distribution=None,
    version="0.0.0", allow_errors=False) -> Registry`` registers a plugin for this test only,
    through the same door as an installed one: it is added to the entry points stancerun
    discovers (as plugin ``name`` of distribution ``distribution``, default ``name``), so
    :func:`get_registry`, :func:`load_experiment` and ``stancerun_run`` see the
    built-ins, any other installed plugins (``STANCERUN_LOAD_PLUGINS`` applies to those, not to
    this one) and this plugin. ``module_or_object`` is a module or any object with
    ``@stancerun.hookimpl`` ``stancerun_register_*`` functions, or an import path such as
    ``"acme_stance"`` or ``"acme_stance.plugin:hooks"``. An installed entry point of the same
    name or module (your own package, installed in development mode) is left out, so the two
    do not clash. It returns the new registry; if the plugin failed to load, the test fails with
    the plugin's error, unless ``allow_errors=True``. Call it again to register more plugins.
    After the test the plugin is gone and the registry is reset.

``stancerun_run``
    A function: ``stancerun_run(experiment_path, *, overrides=(), output_dir=None, quiet=True,
    **kwargs) -> Path`` loads the experiment (``overrides``: ``--set`` style ``"key=value"``
    strings) and runs it to completion in this process, as ``stancerun run`` does (``kwargs`` go to
    the run: ``callbacks=``, ``registry=``, ...), into a new directory under ``tmp_path`` unless ``output_dir`` is given. It returns the
    run directory: ``results.json`` (``results["final"]`` holds every metric key on the
    validation split, ``results["test"]`` on the test split), ``metrics.jsonl``,
    ``predictions.csv``, ``model/``, ... With the tiny model a run takes a few seconds on a CPU.

Example
-------

A metric plugin, tested the way stancerun will use it (with a package, pass its module:
``import acme_stance`` then ``stancerun_plugin(acme_stance, name="acme")``)::

    # tests/test_error_rate.py (no conftest.py needed)
    import json
    import types

    import stancerun
    from stancerun.testing import load_experiment


    def error_rate():
        def compute(pred):
            return {"error_rate": float((pred.predictions != pred.labels).mean())}
        return compute


    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        register("error_rate", error_rate)


    PLUGIN = types.SimpleNamespace(stancerun_register_metrics=stancerun_register_metrics)


    def test_error_rate_in_a_run(stancerun_plugin, stancerun_experiment, stancerun_run):
        registry = stancerun_plugin(PLUGIN, name="acme")
        assert registry.get("metrics", "error_rate").plugin == "acme"
        path = stancerun_experiment('[[metrics]]\nuse = "error_rate"\n')
        results = json.loads((stancerun_run(path) / "results.json").read_text())
        assert 0 <= results["final"]["error_rate"] <= 1


    def test_experiment_validates(stancerun_plugin, stancerun_experiment):
        stancerun_plugin(PLUGIN, name="acme")
        path = stancerun_experiment(metrics=[{"use": "error_rate"}], training={"metric_for_best_model": "error_rate",
                                                                                "greater_is_better": False})
        assert load_experiment(path).config["metrics"] == [{"use": "error_rate"}]

Turn the plugin off with ``pytest -p no:stancerun``. The plain functions below are public too:
stancerun's own steps for a test to call (:func:`get_registry`, :func:`build_registry`,
:func:`load_experiment`, :func:`build`, :func:`predict`), and the makings of your own fixtures
(:func:`save_tiny_model`, :func:`stance_rows`, :func:`write_csv`, :func:`write_tiny_data`,
:func:`tiny_experiment_config`, :func:`write_experiment`). Importing this module is cheap: torch and transformers are imported only when a
fixture that needs them runs.
"""

from __future__ import annotations

import copy
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

#: What the fixtures that load models set for the test: no model or dataset hub is ever reached.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# -- what a plugin's tests call: stancerun's own steps, one function each -----------------
def get_registry():
    """The registry of every installed plugin (and those ``stancerun_plugin`` added), as commands see it."""
    from stancerun.registry.discovery import get_registry as registry

    return registry()


def load_experiment(path, overrides=(), registry=None):
    """An experiment file read, merged and validated as ``stancerun validate`` does: its
    ``.config`` holds every option resolved, or a :class:`stancerun.ConfigError` lists every problem.
    ``overrides``: ``--set`` style ``"key=value"`` strings."""
    from stancerun.config.experiment import load_experiment as load

    return load(path, list(overrides), registry=registry)


def build(registry, kind: str, table: dict):
    """The object a resolved table builds, as a run builds it: ``build(registry, "metrics",
    {"use": "f1", "average": "macro"})`` calls the factory with the table's options, checked and
    converted, and checks the result keeps its contract (``kind``: datasets, models, ...)."""
    from stancerun.config.experiment import build as build_component

    return build_component(registry, kind, table)


def build_registry(plugins):
    """A fresh registry from ``(plugin name, module, distribution, version)`` tuples alone (no
    install, and the process-wide registry is left alone)."""
    from stancerun.registry.discovery import build_registry as build_fresh

    return build_fresh(plugins)


def predict(run_dir, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
    """``stancerun predict`` on texts: one row per text (``label``, ``confidence``,
    ``probabilities``), from the run directory's saved model alone."""
    from stancerun.inference.predict import predict as predict_texts

    return predict_texts(Path(run_dir), list(texts), None if pairs is None else list(pairs), batch_size)


# -- tiny models and data, made on the fly ----------------------------------------------

POSITIVE = "good great fine excellent love support yes agree helpful fair".split()
NEGATIVE = "bad awful poor terrible hate oppose no disagree harmful unfair".split()
NEUTRAL = "table chair window monday report meeting schedule paper street number".split()
FILLER = "the a this policy plan it is was very really about our city new".split()
TARGETS = ["tax", "ban", "park"]
LABELS = ["support", "neutral", "oppose"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + NEUTRAL + FILLER + TARGETS))


def stance_rows(n: int, seed: int = 0) -> list[dict]:
    """Short texts whose label is told by their words, with lengths that vary (for padding tests)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, words = [("support", POSITIVE), ("oppose", NEGATIVE), ("neutral", NEUTRAL)][i % 3]
        text = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 8)))
        text = f"{text} {' '.join(rng.choice(words) for _ in range(rng.randint(1, 3)))}".strip()
        rows.append({"text": text, "target": TARGETS[i % len(TARGETS)], "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    """``rows`` (dicts with the same keys) as a CSV file with a header; makes the parent folders."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_tiny_data(folder: Path) -> dict[str, Path]:
    """``folder``/train.csv (90 rows) and ``folder``/test.csv (30 rows) of :func:`stance_rows`."""
    folder = Path(folder)
    return {"train": write_csv(folder / "train.csv", stance_rows(90, seed=1)),
            "test": write_csv(folder / "test.csv", stance_rows(30, seed=2))}


def save_tiny_model(folder: Path, arch: str = "bert") -> Path:
    """A 2-layer encoder without a classification head (the head is new at load time, as with
    a real pretrained checkpoint) and a word-level tokenizer over :data:`VOCAB`, saved in ``folder``.
    ``arch``: ``"bert"`` or ``"distilbert"``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, DistilBertConfig, DistilBertModel

    if arch not in ("bert", "distilbert"):
        raise ValueError(f"arch: expected 'bert' or 'distilbert', got {arch!r}")
    torch.manual_seed(0)
    vocab = {token: i for i, token in enumerate(VOCAB)}
    if arch == "bert":
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37, max_position_embeddings=64)
        model = BertModel(config)
    else:
        config = DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                  max_position_embeddings=64)
        model = DistilBertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = BertTokenizer(vocab=vocab)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    return Path(folder)


# -- experiment files ------------------------------------------------------------------------

def tiny_experiment_config(model_dir: Path, data: dict[str, Path], output_dir: Path | None = None) -> dict:
    """The experiment :func:`stancerun_experiment` writes, as a dict: the tiny model with LoRA r=4,
    3 epochs, the CSV data (``data``: ``train`` and optionally ``validation`` / ``test`` paths)."""
    data_table: dict[str, Any] = {"use": "csv", **{split: str(data[split]) for split in ("train", "validation", "test")
                                                   if data.get(split) is not None}, "labels": list(LABELS)}
    config = {
        "name": "tiny",
        "seed": 7,
        "output_dir": str(output_dir) if output_dir is not None else "runs",
        "data": data_table,
        "model": {"use": "hf", "name": str(model_dir), "max_length": 32},
        "adapter": {"use": "lora", "r": 4, "alpha": 8},
        "training": {"num_train_epochs": 3, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
                     "learning_rate": 5e-3, "eval_strategy": "epoch", "save_strategy": "epoch", "logging_steps": 5,
                     "metric_for_best_model": "accuracy"},
        "evaluation": {"bootstrap_resamples": 0, "plots": False, "baselines": ["majority"]},
        "metrics": [{"use": "accuracy"}, {"use": "f1", "average": "macro"}],
    }
    return config


def merge_experiment(config: dict, extra_toml: str = "", **overrides) -> dict:
    """``config`` with ``extra_toml`` then ``overrides`` applied (see :func:`stancerun_experiment`)."""
    from stancerun.config import tomlio

    merged = copy.deepcopy(config)
    for key, value in tomlio.loads(extra_toml).items() if extra_toml.strip() else ():
        current = merged.get(key)
        if isinstance(value, list) and isinstance(current, list) and all(isinstance(v, dict) for v in value):
            merged[key] = current + value  # [[metrics]], [[callbacks]]: added to the defaults
        else:
            merged[key] = value  # a [table] replaces the default one as a whole
    for key, value in overrides.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            for sub, sub_value in value.items():
                if sub_value is None:
                    current.pop(sub, None)
                else:
                    current[sub] = copy.deepcopy(sub_value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_experiment(path: Path, config: dict, extra_toml: str = "", **overrides) -> Path:
    """Write ``config`` (with ``extra_toml`` and ``overrides`` merged in) as TOML to ``path``."""
    from stancerun.config import tomlio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlio.dumps(merge_experiment(config, extra_toml, **overrides)), encoding="utf-8")
    return path


# -- fixtures ---------------------------------------------------------------------------------

def _offline(monkeypatch) -> None:
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    if "TOKENIZERS_PARALLELISM" not in os.environ:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def stancerun_tiny_model(tmp_path_factory) -> Path:
    """A tiny BERT encoder and word-level tokenizer, saved with save_pretrained (once per session)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _offline(monkeypatch)
        return save_tiny_model(tmp_path_factory.mktemp("stancerun-tiny-model"), "bert")


@pytest.fixture
def stancerun_tiny_data(tmp_path) -> dict[str, Path]:
    """{"train": train.csv (90 rows), "test": test.csv (30 rows)}: columns text, target, label."""
    return write_tiny_data(tmp_path / "stancerun-data")


@pytest.fixture
def stancerun_experiment(tmp_path, stancerun_tiny_model, stancerun_tiny_data):
    """``stancerun_experiment(extra_toml="", **overrides)``: an experiment file over the tiny model and data."""
    written: list[Path] = []
    base = tiny_experiment_config(stancerun_tiny_model, stancerun_tiny_data, tmp_path / "stancerun-runs")

    def make(extra_toml: str = "", **overrides) -> Path:
        stem = "experiment" if not written else f"experiment-{len(written) + 1}"
        path = write_experiment(tmp_path / f"{stem}.toml", base, extra_toml, **overrides)
        written.append(path)
        return path

    return make


class _GivenPlugin:
    """An entry point whose target is an object handed over in the test (no import)."""

    group = "stancerun"

    def __init__(self, name: str, target: object):
        self.name, self._target = name, target
        self.value = getattr(target, "__name__", None) or f"<{type(target).__name__} given to stancerun_plugin>"

    def load(self) -> object:
        return self._target


def _module_of(value) -> str:
    """The module an entry point's value names ("pkg.mod:attr" -> "pkg.mod")."""
    return str(value).partition(":")[0].strip()


def _entry_point(name: str, target: object):
    import importlib.metadata

    from stancerun.registry.discovery import ENTRY_POINT_GROUP

    if isinstance(target, str):
        return importlib.metadata.EntryPoint(name=name, value=target, group=ENTRY_POINT_GROUP)
    module_name = getattr(target, "__name__", None)
    if isinstance(module_name, str) and sys.modules.get(module_name) is target:
        return importlib.metadata.EntryPoint(name=name, value=module_name, group=ENTRY_POINT_GROUP)
    return _GivenPlugin(name, target)


@pytest.fixture
def stancerun_plugin():
    """``stancerun_plugin(module_or_object, name="myplugin")``: register a plugin for this test only."""
    from stancerun.registry import discovery as plugins

    added: list[tuple[Any, str, str]] = []
    patch = pytest.MonkeyPatch()
    real_discover = plugins.discover

    def discover(*args, **kwargs):
        found = real_discover(*args, **kwargs)
        names = {ep.name for ep, _, _ in added}
        modules = {_module_of(ep.value) for ep, _, _ in added}
        # An installed copy of a plugin given here (a package in development mode) would clash with it.
        kept = [(ep, dist, version) for ep, dist, version in found
                if dist.lower() == plugins.BUILTIN_DISTRIBUTION
                or (ep.name not in names and _module_of(ep.value) not in modules)]
        return kept + added

    def register(module_or_object, name: str = "myplugin", *, distribution: str | None = None, version: str = "0.0.0",
                 allow_errors: bool = False):
        if any(ep.name == name for ep, _, _ in added):
            raise ValueError(f"stancerun_plugin: a plugin named {name!r} is already registered in this test")
        if not added:
            patch.setattr(plugins, "discover", discover)
        added.append((_entry_point(name, module_or_object), distribution or name, version))
        plugins.reset()
        registry = plugins.get_registry()
        info = next((p for p in registry.plugins if p.name == name), None)
        if info is not None and info.error and not allow_errors:
            pytest.fail(f"stancerun_plugin: plugin {name!r} failed to load: {info.error}", pytrace=False)
        return registry

    try:
        yield register
    finally:
        patch.undo()
        plugins.reset()


@pytest.fixture
def stancerun_run(tmp_path, monkeypatch):
    """``stancerun_run(experiment_path, **kwargs)``: run the experiment in this process; the run directory."""
    _offline(monkeypatch)
    count = [0]

    def run(experiment_path, *, overrides=(), output_dir=None, quiet: bool = True, **kwargs) -> Path:
        from stancerun.config.experiment import load_experiment
        from stancerun.engine.run import run_experiment

        count[0] += 1
        experiment = load_experiment(experiment_path, list(overrides), registry=kwargs.get("registry"))
        if output_dir is None:
            output_dir = tmp_path / "stancerun-runs" / f"run-{count[0]}"
        return run_experiment(experiment, output_dir=str(output_dir), quiet=quiet, **kwargs)

    return run
