"""Plugin discovery: entry points, the allow-list, duplicate names, broken plugins."""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings

import pytest

import stancerun
from stancerun import plugins
from stancerun.config import load_experiment
from stancerun.errors import ConfigError, UsageError
from stancerun.plugins import PluginWarning, build_registry, get_registry


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory (as pytest's own tests do)."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]):
        self._name, self._version, self._eps = name, version, entry_points

    def read_text(self, filename):
        if filename == "METADATA":
            return f"Metadata-Version: 2.1\nName: {self._name}\nVersion: {self._version}\n"
        if filename == "entry_points.txt":
            return "[stancerun]\n" + "".join(f"{k} = {v}\n" for k, v in self._eps.items())
        return None

    def locate_file(self, path):
        return path


def metric_plugin(module_name: str, metric_name: str) -> types.ModuleType:
    module = types.ModuleType(module_name)

    def kappa(*, weights: str | None = None):
        def compute(pred):
            from sklearn.metrics import cohen_kappa_score

            return {"kappa": float(cohen_kappa_score(pred.labels, pred.predictions, weights=weights))}

        return compute

    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        register(metric_name, kappa)

    module.stancerun_register_metrics = stancerun_register_metrics
    return module


@pytest.fixture
def install(monkeypatch):
    """Install fake distributions (and their modules) for one test."""
    real = importlib.metadata.distributions

    def _install(*dists: FakeDistribution, modules: dict[str, types.ModuleType] = {}):
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real(), *dists])
        plugins.reset()

    return _install


def test_builtins_register_every_component(builtin_registry):
    assert builtin_registry.names("datasets") == ["csv", "hf", "inline", "jsonl"]
    assert builtin_registry.names("models") == ["hf", "sentence"]
    assert builtin_registry.names("adapters") == ["contrastive", "frozen", "full", "lora"]
    assert builtin_registry.names("metrics") == ["accuracy", "f1", "f1_favor_against", "mae", "mse", "precision", "recall"]
    assert builtin_registry.names("callbacks") == ["early_stopping", "tensorboard", "wandb"]
    assert builtin_registry.names("baselines") == ["embedding_probe", "majority", "ngram_svm", "tfidf"]
    owners = {p.name: p.distribution for p in builtin_registry.plugins}
    assert owners == {"adapters": "stancerun", "baselines": "stancerun", "callbacks": "stancerun", "data": "stancerun",
                      "fewshot": "stancerun", "hf": "stancerun", "metrics": "stancerun"}
    assert builtin_registry.get("metrics", "f1").plugin == "metrics"


def test_registry_is_loaded_once():
    assert get_registry() is get_registry()


def test_third_party_plugin_through_an_entry_point(install, monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.ALLOW_ENV, "acme-stance")
    install(FakeDistribution("acme-stance", "1.2.3", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "cohen_kappa")})
    registry = get_registry()
    info = next(p for p in registry.plugins if p.name == "acme")
    assert (info.distribution, info.version, info.error) == ("acme-stance", "1.2.3", None)
    assert registry.get("metrics", "cohen_kappa").plugin == "acme"
    # and an experiment can use it, with its options checked against the factory's signature
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    path = tmp_path / "e.toml"
    path.write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n[[metrics]]\nuse = "cohen_kappa"\nweights = "linear"\n')
    assert load_experiment(path).config["metrics"] == [{"use": "cohen_kappa", "weights": "linear"}]
    from stancerun.config import build

    compute = build(registry, "metrics", {"use": "cohen_kappa", "weights": None})
    assert compute(stancerun.EvalPrediction([[1, 0], [0, 1]], [0, 1]))["kappa"] == 1.0


def test_allow_list_keeps_unlisted_distributions_out(install, monkeypatch):
    install(FakeDistribution("acme-stance", "1.0", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "cohen_kappa")})
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    assert "cohen_kappa" not in get_registry().names("metrics")
    plugins.reset()
    monkeypatch.setenv(plugins.ALLOW_ENV, "other, acme_stance")  # names are normalised
    assert "cohen_kappa" in get_registry().names("metrics")
    plugins.reset()
    monkeypatch.delenv(plugins.ALLOW_ENV)  # unset: everything installed loads
    assert "cohen_kappa" in get_registry().names("metrics")


def test_duplicate_names_are_an_error_naming_both_plugins(install, monkeypatch):
    monkeypatch.setenv(plugins.ALLOW_ENV, "acme-stance")
    install(FakeDistribution("acme-stance", "1.0", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "accuracy")})
    with pytest.raises(UsageError, match="metric 'accuracy' is registered by two plugins: 'metrics' and 'acme'"):
        get_registry()


def test_duplicate_names_between_two_modules():
    with pytest.raises(UsageError, match="'one' and 'two'"):
        build_registry([("one", metric_plugin("m1", "kappa"), "d1", "1"), ("two", metric_plugin("m2", "kappa"), "d2", "1")])


def test_broken_plugin_is_reported_and_breaks_nothing_else(install, monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.ALLOW_ENV, "broken-dist")
    install(FakeDistribution("broken-dist", "0.1", {"broken": "no_such_module_anywhere"}))
    with pytest.warns(PluginWarning, match="plugin 'broken' \\(broken-dist\\) failed to load: ModuleNotFoundError"):
        registry = get_registry()
    assert next(p for p in registry.plugins if p.name == "broken").error.startswith("ModuleNotFoundError")
    assert "accuracy" in registry.names("metrics")
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    path = tmp_path / "e.toml"
    path.write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n')
    load_experiment(path)  # an experiment that does not use the plugin still validates
    path.write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n[[metrics]]\nuse = "kappa"\n')
    with pytest.raises(ConfigError, match="plugins that failed to load: broken"):
        load_experiment(path)


def test_plugin_whose_hook_raises_is_recorded():
    module = types.ModuleType("raising")

    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        raise RuntimeError("boom")

    module.stancerun_register_metrics = stancerun_register_metrics
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        registry = build_registry([("raising", module, "raising-dist", "1")])
    assert registry.plugins[0].error == "RuntimeError: boom"


def test_invalid_registration_is_a_usage_error():
    module = types.ModuleType("bad")

    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        register("x", "not callable")

    module.stancerun_register_metrics = stancerun_register_metrics
    with pytest.raises(UsageError, match="not callable"):
        build_registry([("bad", module, "bad-dist", "1")])


def test_a_third_party_baseline_is_scored_and_stacked_like_a_builtin(install, monkeypatch, tmp_path):
    """The docs/plugins.md example: a label-prior baseline from its own distribution."""
    import json as jsonlib

    import numpy as np

    module = types.ModuleType("prior_stance")

    class Prior:
        def fit(self, train, labels):
            counts = np.bincount(train.labels, minlength=len(labels)) + 1.0
            self.scores = np.log(counts / counts.sum())

        def predict(self, examples):
            return np.tile(self.scores, (len(examples), 1)).astype(np.float32)

        def save(self, directory):
            (directory / "prior.json").write_text(jsonlib.dumps(self.scores.tolist()))

        def restore(self, directory, labels):
            self.scores = np.asarray(jsonlib.loads((directory / "prior.json").read_text()))

    @stancerun.hookimpl
    def stancerun_register_baselines(register):
        register("prior", lambda: Prior())

    module.stancerun_register_baselines = stancerun_register_baselines
    monkeypatch.setenv(plugins.ALLOW_ENV, "prior-stance")
    install(FakeDistribution("prior-stance", "0.1", {"prior": "prior_stance"}), modules={"prior_stance": module})
    registry = get_registry()
    assert registry.get("baselines", "prior").plugin == "prior"
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"t{i},{'xy'[i % 3 == 0]}\n" for i in range(30)))
    path = tmp_path / "e.toml"
    path.write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n[evaluation]\nbaselines = ["majority", "prior"]\n'
                    '[ensemble]\nstack = ["prior"]\n')
    config = load_experiment(path, registry=registry).config
    assert config["evaluation"]["baselines"] == ["majority", "prior"] and config["ensemble"]["stack"] == ["prior"]
    from stancerun import baselines
    from stancerun.datasets import Examples

    fitted = baselines.fit(registry, config["evaluation"]["baselines"], Examples(["a", "b", "c"], [0, 0, 1]), ["x", "y"])
    scores = baselines.score_all(fitted, {"validation": Examples(["d"], [0])}, 2)["validation"]
    assert set(scores) == {"majority", "prior"} and scores["prior"].argmax() == 0
