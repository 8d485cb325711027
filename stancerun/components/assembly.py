"""A run's components: built from the experiment's tables through the registry, recorded with
the plugin that built each, and rebuilt from that record when a saved run is loaded again.

Nothing here imports torch or knows a built-in plugin: what the core asks of each object is
stated in :mod:`stancerun.contracts`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from stancerun import contracts, kinds
from stancerun.config.experiment import Experiment, build
from stancerun.data.rows import Splits
from stancerun.errors import UsageError
from stancerun.contracts import EvalPrediction
from stancerun.registry.table import NOUNS, Registry
from stancerun.config.schema import CORE_OPTIONS

#: The sections whose components a saved model records, so it can be rebuilt through them.
SAVED = {kind.section: kind.name for kind in kinds.KINDS if kind.saved}

#: Version of model/stancerun.json's layout.
FORMAT = 2


@dataclass
class Components:
    """Everything built from an experiment before training starts."""

    dataset: contracts.Dataset
    splits: Splits
    data_report: object  # stancerun.data.checks.DataReport
    model_component: contracts.Model
    loaded: contracts.LoadedModel
    model: object  # the module to train: what the adapter made of loaded.model
    adapter: contracts.Adapter
    metrics: list
    callbacks: list
    origins: dict  # section -> {"use", "plugin", "distribution", "version"}

    @property
    def metric_fn(self):
        return combined_metrics(self.metrics)

    @property
    def columns(self) -> contracts.Columns:
        return contracts.columns(self.dataset)


def origin(registry: Registry, kind: str, use: str) -> dict:
    """Which plugin, distribution and version registered ``use``."""
    component = registry.get(kind, use)
    plugin = registry.plugin(component.plugin)
    return {"use": use, "plugin": component.plugin, "distribution": plugin.distribution, "version": plugin.version}


def build_components(experiment: Experiment, registry: Registry, splits: Splits | None = None) -> Components:
    """Data first (and its checks, which may stop the run), then model, adapter, metrics, callbacks.
    ``splits`` replaces the dataset's own (cross-validation folds)."""
    from stancerun.data import checks as datachecks

    config = experiment.config
    dataset = build(registry, "datasets", config["data"])
    if splits is None:
        splits = dataset.load()
    data_report = datachecks.check(splits, config["data"].get("on_leakage", "warn"))
    model_component, loaded, adapter, model = build_model(experiment, registry, splits.labels)
    metrics = [build(registry, "metrics", table) for table in config["metrics"]]
    callbacks = [build(registry, "callbacks", table) for table in config["callbacks"]]
    origins = {section: origin(registry, kind, config[section]["use"]) for section, kind in SAVED.items()}
    return Components(dataset, splits, data_report, model_component, loaded, model, adapter, metrics, callbacks,
                      origins)


def build_model(experiment: Experiment, registry: Registry, labels: list[str]):
    """(model component, its loaded model, adapter, the module to train), freshly built."""
    model_component = build(registry, "models", experiment.config["model"])
    loaded = model_component.load(labels)
    adapter = build(registry, "adapters", experiment.config["adapter"])
    return model_component, loaded, adapter, adapter.apply(loaded)


def saved_info(components: Components, experiment: Experiment) -> dict:
    """model/stancerun.json: labels, columns, and which plugins built the model with the options
    that rebuild it anywhere (the model's own ``rebuild_options``: absolute sources)."""
    config, loaded, cols = experiment.config, components.loaded, components.columns
    options = {
        "data": {k: v for k, v in config["data"].items() if k != "use" and k not in CORE_OPTIONS["data"]},
        "model": components.model_component.rebuild_options(),
        "adapter": {k: v for k, v in config["adapter"].items() if k != "use"},
    }
    return {
        "format": FORMAT,
        "labels": components.splits.labels,
        "max_length": loaded.max_length,
        "base_model": loaded.source,
        "adapter": config["adapter"]["use"],
        # Who wrote the weights: the adapter (its own, over a freshly loaded base) or the model (whole).
        "weights": "adapter" if contracts.saves_itself(components.adapter) else "model",
        "text_column": cols.text,
        "text_pair_column": cols.pair,
        "label_column": cols.label,
        "components": {section: {**components.origins[section], "options": options[section]} for section in SAVED},
    }


def rebuild(registry: Registry, kind: str, record: dict, *, files_must_exist: bool = True):
    """The component a saved run recorded, built again through the plugin that built it."""
    use, plugin = record["use"], record["plugin"]
    built_by = f"plugin '{plugin}' ({record['distribution']} {record['version']})"
    registered = registry.components[kind].get(use)
    if registered is None:
        broken = next((p for p in registry.plugins if p.name == plugin and p.error), None)
        why = f"it failed to load: {broken.error}" if broken else "it is not installed or not allowed here"
        raise UsageError(f"this run's {NOUNS[kind]} '{use}' was built by {built_by}; {why} "
                         f"(pip install {record['distribution']}, or list it in STANCERUN_LOAD_PLUGINS)")
    if registered.plugin != plugin:
        raise UsageError(f"this run's {NOUNS[kind]} '{use}' was built by {built_by}, but here '{use}' comes from "
                         f"plugin '{registered.plugin}'")
    installed = registry.plugin(plugin).version
    if installed != record["version"]:
        warnings.warn(f"{NOUNS[kind]} '{use}': the run was built with {record['distribution']} {record['version']}, "
                      f"{installed} is installed; results may differ", stacklevel=2)
    return build(registry, kind, {"use": use, **record["options"]}, files_must_exist=files_must_exist)


def saved_record(info: dict, section: str, where) -> dict:
    """One component record of model/stancerun.json, or a clear error for an older layout."""
    if info.get("format") != FORMAT or section not in info.get("components", {}):
        raise UsageError(f"{where}: saved by an older stancerun (model/stancerun.json has no component records); "
                         "train it again with this version")
    return info["components"][section]


def compute_metrics(metric_fns, pred: EvalPrediction) -> dict:
    results = {}
    for fn in metric_fns:
        results.update({k: float(v) for k, v in fn(pred).items()})
    return results


def combined_metrics(metric_fns):
    """All of an experiment's metrics as one function; vectorised for the bootstrap when every
    metric has a ``from_confusion`` twin (see :data:`stancerun.contracts.Metric`)."""

    def compute(pred):
        return compute_metrics(metric_fns, pred)

    if all(hasattr(fn, "from_confusion") for fn in metric_fns):
        def from_confusion(cm, names):
            found = {}
            for fn in metric_fns:
                found.update(fn.from_confusion(cm, names))
            return found

        compute.from_confusion = from_confusion
    return compute
