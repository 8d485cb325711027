"""Plugin discovery: entry points, the allow-list, duplicate names, broken plugins."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

import stancerun
from stancerun.registry import discovery as plugins
from stancerun.config.experiment import load_experiment
from stancerun.errors import ConfigError, UsageError
from stancerun.registry.discovery import PluginWarning, build_registry, get_registry


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


def test_every_table_of_kinds_derives_from_the_one_in_stancerun_kinds():
    # The five tables the kinds were once restated in, with the values they had by hand.
    from stancerun import contracts, hookspecs, kinds
    from stancerun.components.assembly import SAVED
    from stancerun.config.schema import BASELINES, COMPONENT_SECTIONS
    from stancerun.registry.table import NOUNS

    assert hookspecs.KINDS == ("datasets", "models", "adapters", "metrics", "callbacks", "baselines")
    assert NOUNS == {"datasets": "dataset", "models": "model", "adapters": "adapter", "metrics": "metric",
                     "callbacks": "callback", "baselines": "baseline"}
    assert contracts.REQUIRED == {"datasets": ("load",), "models": ("load", "save", "restore", "rebuild_options"),
                                  "adapters": ("apply",), "metrics": ("__call__",), "callbacks": (),
                                  "baselines": ("fit", "predict")}
    assert COMPONENT_SECTIONS == {"data": ("datasets", False, None), "model": ("models", False, {"use": "hf"}),
                                  "adapter": ("adapters", False, {"use": "lora"}),
                                  "metrics": ("metrics", True, [{"use": "accuracy"}]),
                                  "callbacks": ("callbacks", True, [])}
    assert SAVED == {"data": "datasets", "model": "models", "adapter": "adapters"}
    assert BASELINES == ("majority", "tfidf", "ngram_svm")
    # One hook per kind, named after it, and nothing else declared as a hook.
    assert sorted(name for name in dir(hookspecs) if name.startswith("stancerun_")) == sorted(k.hook for k in kinds.KINDS)
    assert [k.section for k in kinds.KINDS if k.saved] == list(SAVED)


def test_builtins_register_every_component(builtin_registry):
    assert builtin_registry.names("datasets") == ["csv", "hf", "inline", "jsonl"]
    assert builtin_registry.names("models") == ["hf", "sentence"]
    assert builtin_registry.names("adapters") == ["contrastive", "frozen", "full", "lora"]
    assert builtin_registry.names("metrics") == ["accuracy", "f1", "f1_favor_against", "hf_evaluate", "mae", "mse",
                                                 "precision", "recall"]
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
    from stancerun.config.experiment import build

    compute = build(registry, "metrics", {"use": "cohen_kappa", "weights": None})
    assert compute(stancerun.EvalPrediction([[1, 0], [0, 1]], [0, 1]))["kappa"] == 1.0


def test_allow_list_keeps_unlisted_distributions_out(install, monkeypatch):
    install(FakeDistribution("acme-stance", "1.0", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "cohen_kappa")})
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    assert "cohen_kappa" not in get_registry().names("metrics")
    plugins.reset()
    monkeypatch.setenv(plugins.ALLOW_ENV, "other, acme_stance")  # names are normalised
    with pytest.warns(PluginWarning, match="names 'other', which no installed plugin distribution is"):
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


def test_a_misspelled_or_unmarked_hook_is_the_plugin_s_error_not_silence():
    # pluggy passes over a hook it has no spec for, and over a function not marked as a hook:
    # the plugin would register nothing and its components be "unknown" with no word why.
    misspelled, unmarked, fine = (types.ModuleType(n) for n in ("misspelled", "unmarked", "fine"))

    @stancerun.hookimpl
    def stancerun_register_metric(register):
        register("kappa", lambda: None)

    def stancerun_register_callbacks(register):
        register("noisy", lambda: None)

    misspelled.stancerun_register_metric = stancerun_register_metric
    unmarked.stancerun_register_callbacks = stancerun_register_callbacks
    fine.stancerun_register_metrics = metric_plugin("fine", "kappa").stancerun_register_metrics
    with pytest.warns(PluginWarning) as caught:
        registry = build_registry([("misspelled", misspelled, "misspelled-dist", "1"),
                                   ("unmarked", unmarked, "unmarked-dist", "1"), ("fine", fine, "fine-dist", "1")])
    errors = {p.name: p.error for p in registry.plugins}
    assert errors["misspelled"] == ("PluginValidationError: unknown hook 'stancerun_register_metric' "
                                    "(did you mean 'stancerun_register_metrics'?)")
    assert errors["unmarked"] == ("PluginValidationError: 'stancerun_register_callbacks' is not marked "
                                  "@stancerun.hookimpl, so it would never be called")
    assert errors["fine"] is None and registry.names("metrics") == ["kappa"]  # the others load on
    assert registry.by_plugin("misspelled") == {} and registry.names("callbacks") == []
    assert "plugin 'misspelled' (misspelled-dist) failed to load" in str(caught[0].message)
    assert "unknown metric 'x'; known: kappa (plugins that failed to load: misspelled, unmarked)" in \
        registry.unknown_message("metrics", "x")


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
    from stancerun.evaluation import baselines
    from stancerun.data.rows import Examples

    fitted = baselines.fit(registry, config["evaluation"]["baselines"], Examples(["a", "b", "c"], [0, 0, 1]), ["x", "y"])
    scores = baselines.score_all(fitted, {"validation": Examples(["d"], [0])}, 2)["validation"]
    assert set(scores) == {"majority", "prior"} and scores["prior"].argmax() == 0


# -- `stancerun plugins`: --verbose, --json, clashes and the allow-list's unknown names -------
def test_plugins_verbose_shows_options_read_from_the_signature(capsys):
    from stancerun.cli.main import main

    assert main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "dataset csv (plugin data): CSV files with a header row (UTF-8)." in out
    assert re.search(r"\n +train +a path to a file +required", out)
    assert re.search(r"\n +delimiter +a string +','", out)
    assert "metric accuracy (plugin metrics): Share of examples whose predicted class is the true class." in out
    assert re.search(r"\n +average +one of 'macro', 'weighted', 'per_class' +'macro'", out)


def test_plugins_json_is_the_same_information_for_tools(capsys):
    from stancerun.cli.main import main

    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"plugins", "components", "clashes", "unknown_allowed"}
    assert {"name": "data", "distribution": "stancerun", "version": importlib.metadata.version("stancerun"),
            "error": None} in report["plugins"]
    csv = next(c for c in report["components"] if (c["kind"], c["name"]) == ("dataset", "csv"))
    assert csv["plugin"] == "data" and csv["doc"] == "CSV files with a header row (UTF-8)."
    options = {o["name"]: o for o in csv["options"]}
    assert options["train"] == {"name": "train", "type": "a path to a file", "default": None, "required": True}
    assert options["delimiter"] == {"name": "delimiter", "type": "a string", "default": ",", "required": False}
    assert options["split"]["default"] == {"test_size": 0.2, "seed": 42, "stratify": True}  # as validate writes it
    assert report["clashes"] == [] and report["unknown_allowed"] == []


def odd_plugin() -> types.ModuleType:
    """Factories `stancerun plugins` must describe without choking: defaults JSON cannot carry,
    **kwargs, and a callable whose signature cannot be read."""
    module = types.ModuleType("odd_stance")

    def where(*, path=Path("x"), ratio: float = float("nan"), **rest):
        """Somewhere."""

    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        print("odd plugin says hello")  # must not end up inside `plugins --json`
        register("where", where)
        register("unreadable", dict)

    module.stancerun_register_metrics = stancerun_register_metrics
    return module


def test_plugins_describes_odd_factories_without_failing(install, monkeypatch, capsys):
    from stancerun.cli.main import main

    monkeypatch.setenv(plugins.ALLOW_ENV, "odd-stance")
    install(FakeDistribution("odd-stance", "1.0", {"odd": "odd_stance"}), modules={"odd_stance": odd_plugin()})
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "odd plugin says hello" in err
    components = {c["name"]: c for c in json.loads(out)["components"] if c["plugin"] == "odd"}
    assert [o["default"] for o in components["where"]["options"]] == [repr(Path("x")), "nan"]
    assert components["where"]["other_options"] is True
    assert components["unreadable"]["error"].startswith("cannot read its options: ValueError")
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    assert "(any other key)" in out and "cannot read its options" in out and "Traceback" not in out


def test_a_clash_is_shown_by_plugins_and_stops_validate(install, monkeypatch, capsys, tmp_path):
    from stancerun.cli.main import main

    monkeypatch.setenv(plugins.ALLOW_ENV, "acme-stance")
    install(FakeDistribution("acme-stance", "1.0", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "accuracy")})
    message = "metric 'accuracy' is registered by two plugins: 'metrics' and 'acme'"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "clash: " + message in out
    assert main(["plugins", "--json"]) == 0
    clashes = json.loads(capsys.readouterr().out)["clashes"]
    assert [(c["kind"], c["name"], c["between"]) for c in clashes] == [("metric", "accuracy", ["metrics", "acme"])]
    assert clashes[0]["message"].startswith(message)
    # Everything that runs experiments still refuses to guess which 'accuracy' is meant.
    plugins.reset()
    with pytest.raises(UsageError, match=message):
        get_registry()
    plugins.reset()
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "e.toml").write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n')
    assert main(["validate", str(tmp_path / "e.toml")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_two_plugins_of_one_name_are_shown_by_plugins(install, monkeypatch, capsys):
    from stancerun.cli.main import main

    monkeypatch.setenv(plugins.ALLOW_ENV, "acme-one,acme-two")
    install(FakeDistribution("acme-one", "1.0", {"acme": "acme_one"}), FakeDistribution("acme-two", "2.0", {"acme": "acme_two"}),
            modules={"acme_one": metric_plugin("acme_one", "kappa"), "acme_two": metric_plugin("acme_two", "kappa2")})
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(c["kind"], c["name"], c["between"]) for c in report["clashes"]] == [("plugin", "acme", ["acme-one", "acme-two"])]
    second = next(p for p in report["plugins"] if p["distribution"] == "acme-two")
    assert second["error"] == "not loaded: its name is taken by plugin 'acme' of 'acme-one'"
    names = {c["name"] for c in report["components"] if c["plugin"] == "acme"}
    assert "kappa" in names and "kappa2" not in names
    assert main(["plugins"]) == 0
    assert "clash: two plugins are named 'acme': one from 'acme-one' and one from 'acme-two'" in capsys.readouterr().out
    plugins.reset()
    with pytest.raises(UsageError, match="two plugins are named 'acme'"):
        get_registry()


def test_an_allow_list_name_that_is_not_installed_is_reported(install, monkeypatch, capsys):
    from stancerun.cli.main import main

    monkeypatch.setenv(plugins.ALLOW_ENV, "acme_stance, foo-bar, stancerun")  # stancerun itself is always known
    install(FakeDistribution("acme-stance", "1.0", {"acme": "acme_stance"}),
            modules={"acme_stance": metric_plugin("acme_stance", "cohen_kappa")})
    message = "STANCERUN_LOAD_PLUGINS names 'foo-bar', which no installed plugin distribution is; installed plugin distributions: "
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert message in out and "acme-stance" in out.split(message)[1] and "PluginWarning" not in err
    assert main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unknown_allowed"] == ["foo-bar"]
    plugins.reset()
    with pytest.warns(PluginWarning, match=re.escape(message)):
        registry = get_registry()
    assert "cohen_kappa" in registry.names("metrics")  # the names that are installed still load


# -- a plugin author's mistakes, each said once and plainly --------------------------------
def mistaken_plugin() -> types.ModuleType:
    """A metric registered as itself instead of its factory, and a dataset whose option is
    annotated with a type the options cannot be checked against."""
    module = types.ModuleType("mistaken_stance")

    def compute(pred):
        return {"error_rate": float((pred.predictions != pred.labels).mean())}

    def folder(*, path: Path, labels: list[str] | None = None):  # Path: as the module imports it
        """Rows from a folder."""

    @stancerun.hookimpl
    def stancerun_register_metrics(register):
        register("error_rate", compute)

    @stancerun.hookimpl
    def stancerun_register_datasets(register):
        register("folder", folder)

    module.stancerun_register_metrics = stancerun_register_metrics
    module.stancerun_register_datasets = stancerun_register_datasets
    return module


@pytest.fixture
def mistaken(install, monkeypatch):
    monkeypatch.setenv(plugins.ALLOW_ENV, "mistaken-stance")
    install(FakeDistribution("mistaken-stance", "1.0", {"mistaken": "mistaken_stance"}),
            modules={"mistaken_stance": mistaken_plugin()})
    return get_registry()


def test_a_metric_registered_instead_of_its_factory_is_named_as_such(mistaken, tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,x\nb,y\n")
    path = tmp_path / "e.toml"
    path.write_text('[data]\nuse = "csv"\ntrain = "t.csv"\n[[metrics]]\nuse = "accuracy"\n'
                    '[[metrics]]\nuse = "error_rate"\n')
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    (problem,) = error.value.problems  # not "metrics[1].pred: missing required option"
    assert problem.key == "metrics[1].use"
    assert problem.message.startswith("metric 'error_rate' of plugin 'mistaken' takes 'pred', a prediction: it is the "
                                      "metric itself. Register the factory that returns the metric, not the metric "
                                      "itself")
    from stancerun.config.experiment import build

    with pytest.raises(UsageError, match="not the metric itself"):
        build(mistaken, "metrics", {"use": "error_rate"})


def test_a_factory_that_takes_an_option_but_is_no_metric_is_left_alone():
    from stancerun.config.experiment import factory_problem
    from stancerun.registry.table import Component

    def weighted(weights):  # one required positional option, named like no prediction
        return lambda pred: {}

    def typed(x: "stancerun.EvalPrediction"):
        return {}

    assert factory_problem("metrics", Component("metrics", "weighted", weighted, "p")) is None
    assert "it is the metric itself" in factory_problem("metrics", Component("metrics", "typed", typed, "p"))
    # only a metric can be mistaken for its factory; to a callback the option is just unusable
    assert "EvalPrediction is not an annotation" in factory_problem("callbacks", Component("callbacks", "t", typed, "p"))


def test_an_unsupported_option_annotation_names_plugin_component_and_option(mistaken, tmp_path, capsys):
    from stancerun.cli.main import main
    from stancerun.options import SUPPORTED

    (tmp_path / "rows").mkdir()
    path = tmp_path / "e.toml"
    path.write_text('[data]\nuse = "folder"\npath = "rows"\n')
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    (problem,) = error.value.problems  # no bare TypeError
    assert problem.key == "data.use"
    assert problem.message == ("dataset 'folder' of plugin 'mistaken' cannot be configured: option 'path': "
                               f"pathlib.Path is not an annotation stancerun can check a TOML value against "
                               f"(supported: {SUPPORTED})")
    # `plugins --verbose` marks it instead of showing `path` as a valid option
    assert main(["plugins", "--verbose"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dataset folder (plugin mistaken): Rows from a folder." in out
    assert "unusable: option 'path': pathlib.Path is not an annotation stancerun can check" in out
    assert main(["plugins", "--json"]) == 0
    folder = next(c for c in json.loads(capsys.readouterr().out)["components"] if c["name"] == "folder")
    assert "option 'path': pathlib.Path" in folder["error"] and folder["options"] == []


def test_unsupported_finds_the_part_of_an_annotation_that_cannot_be_checked():
    import pathlib
    from typing import Annotated, Any, Literal

    from stancerun.options import UnsupportedAnnotation, check, unsupported

    for fine in (bool, int, float, str, Any, list, dict, list[str], dict[str, float], int | None, Literal["a"],
                 stancerun.File, Annotated[float, stancerun.Range(gt=0)], stancerun.Split, list[stancerun.Split]):
        assert unsupported(fine) is None, fine
    assert unsupported(pathlib.Path) is pathlib.Path
    assert unsupported(list[pathlib.Path] | None) is pathlib.Path
    assert unsupported(dict[str, tuple]) is tuple
    with pytest.raises(UnsupportedAnnotation, match=r"^tuple\[int, int\] is not an annotation"):
        check([1, 2], tuple[int, int])
