"""stancerun.testing, the pytest plugin for plugin authors: used here the way an author would,
its fixtures coming through the ``pytest11`` entry point (none of them is defined in conftest.py)."""

from __future__ import annotations

import json
import types

import pytest

import stancerun
from stancerun.registry import discovery as plugins
from stancerun.config.experiment import load_experiment

pytest_plugins = ["pytester"]

BUILTIN_METRICS = ["accuracy", "f1", "f1_favor_against", "hf_evaluate", "mae", "mse", "precision", "recall"]


def error_rate(*, offset: float = 0.0):
    def compute(pred):
        return {"error_rate": float((pred.predictions != pred.labels).mean()) + offset}

    return compute


@stancerun.hookimpl
def stancerun_register_metrics(register):
    register("error_rate", error_rate)


# A plugin as an in-memory module, as a plugin package's module would be.
PLUGIN = types.ModuleType("acme_error_rate")
PLUGIN.stancerun_register_metrics = stancerun_register_metrics


def test_a_plugin_metric_lands_in_results_json(stancerun_plugin, stancerun_experiment, stancerun_run):
    registry = stancerun_plugin(PLUGIN, name="acme")
    assert registry.names("metrics") == sorted(BUILTIN_METRICS + ["error_rate"])
    assert registry.get("metrics", "error_rate").plugin == "acme"
    assert next(p for p in registry.plugins if p.name == "acme").distribution == "acme"
    assert plugins.get_registry() is registry  # what load_experiment and run_experiment use

    path = stancerun_experiment('[[metrics]]\nuse = "error_rate"\n')
    run = stancerun_run(path)
    results = json.loads((run / "results.json").read_text())
    assert set(results["final"]) == {"loss", "accuracy", "f1_macro", "error_rate"}
    assert results["final"]["error_rate"] == pytest.approx(1 - results["final"]["accuracy"])
    assert results["test"]["error_rate"] == pytest.approx(1 - results["test"]["accuracy"])
    env = json.loads((run / "environment.json").read_text())
    assert {"name": "acme", "distribution": "acme", "version": "0.0.0", "error": None} in env["plugins"]


def test_the_registration_is_undone_after_the_test():
    # runs after the test above: its plugin is gone, and discovery is the real one again
    assert plugins.discover.__module__ == "stancerun.registry.discovery"
    registry = plugins.get_registry()
    assert registry.names("metrics") == BUILTIN_METRICS
    assert "acme" not in {p.name for p in registry.plugins}


def test_the_experiment_file_validates(stancerun_experiment, stancerun_tiny_model, stancerun_tiny_data):
    experiment = load_experiment(stancerun_experiment())
    config = experiment.config
    assert config["model"]["name"] == str(stancerun_tiny_model)
    assert config["data"]["train"] == str(stancerun_tiny_data["train"])
    assert config["data"]["test"] == str(stancerun_tiny_data["test"])
    assert config["adapter"]["use"] == "lora" and config["adapter"]["r"] == 4
    assert [m["use"] for m in config["metrics"]] == ["accuracy", "f1"]
    assert experiment.training.num_train_epochs == 3


def test_extra_toml_replaces_tables_and_overrides_merge_keys(stancerun_experiment, stancerun_plugin):
    stancerun_plugin(PLUGIN, name="acme")
    first = stancerun_experiment('seed = 3\n[adapter]\nuse = "full"\n[[metrics]]\nuse = "error_rate"\noffset = 0.5\n',
                                 name="custom", training={"num_train_epochs": 1, "logging_steps": None})
    config = load_experiment(first).config
    assert (config["name"], config["seed"]) == ("custom", 3)
    assert config["adapter"] == {"use": "full"}  # the whole table replaced: no r, no alpha
    assert [m["use"] for m in config["metrics"]] == ["accuracy", "f1", "error_rate"]  # appended
    assert config["metrics"][2]["offset"] == 0.5
    assert config["training"]["num_train_epochs"] == 1 and config["training"]["learning_rate"] == 5e-3
    second = stancerun_experiment(metrics=[{"use": "error_rate"}], evaluation=None,
                                  training={"metric_for_best_model": "error_rate", "greater_is_better": False})
    assert second != first and first.exists()
    config = load_experiment(second).config
    assert config["metrics"] == [{"use": "error_rate", "offset": 0.0}]
    assert config["evaluation"]["bootstrap_resamples"] == 1000  # the table left out: stancerun's defaults


def test_a_plugin_that_fails_to_load_fails_the_test_unless_allowed(stancerun_plugin):
    with pytest.warns(plugins.PluginWarning, match="no_such_module_anywhere"):
        registry = stancerun_plugin("no_such_module_anywhere", name="broken", allow_errors=True)
    assert registry.plugin("broken").error.startswith("ModuleNotFoundError")
    assert registry.names("metrics") == BUILTIN_METRICS


def test_the_kit_needs_no_conftest(pytester):
    """A plugin author's project: one test file, no conftest.py; the fixtures come from the entry point."""
    pytester.makepyfile(test_author="""
        import types

        import stancerun
        from stancerun.registry import discovery as plugins
        from stancerun.config.experiment import load_experiment


        @stancerun.hookimpl
        def stancerun_register_metrics(register):
            register("always_one", lambda: (lambda pred: {"always_one": 1.0}))


        PLUGIN = types.SimpleNamespace(stancerun_register_metrics=stancerun_register_metrics)


        def test_registers(stancerun_plugin, stancerun_experiment):
            assert "always_one" in stancerun_plugin(PLUGIN, name="mine").names("metrics")
            path = stancerun_experiment('[[metrics]]\\nuse = "always_one"\\n')
            assert load_experiment(path).config["metrics"][-1] == {"use": "always_one"}


        def test_gone_afterwards():
            assert "always_one" not in plugins.get_registry().names("metrics")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


class BitFit:
    """A third-party adapter: train the biases and the classification head, freeze the rest."""

    def apply(self, loaded):
        from stancerun_adapters import head_modules  # the built-in frozen adapter's idea of "the head"

        head = head_modules(loaded)
        for name, param in loaded.model.named_parameters():
            param.requires_grad = name.endswith(".bias") or any(name.startswith(h + ".") for h in head)
        return loaded.model


class BitFitPlugin:
    @staticmethod
    @stancerun.hookimpl
    def stancerun_register_adapters(register):
        register("bitfit", lambda: BitFit())


def test_an_adapter_from_a_plugin_trains_and_its_model_reloads(stancerun_plugin, stancerun_experiment, stancerun_run):
    # The adapter hook through the plugin door: an adapter without save/restore leaves saving the
    # whole model to the model plugin, and the reloaded model must predict what the run did.
    import csv

    from stancerun.inference.predict import predict

    stancerun_plugin(BitFitPlugin, name="bitfit")
    run_dir = stancerun_run(stancerun_experiment('[adapter]\nuse = "bitfit"\n'))
    with (run_dir / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    again = predict(run_dir, [r["text"] for r in rows], None, 16)
    assert [r["label"] for r in again] == [r["prediction"] for r in rows]
