"""Everything `run` would fail on in its first minute, found before anything heavy loads.

`validate` and `run` call :func:`check` after the experiment itself validated: it reads the data
(every bad row at once), asks the model plugin whether its model can be found, and checks that
the metric keys training and callbacks read are keys the configured metrics produce. Each check
comes through the contracts (:mod:`stancerun.contracts`); nothing here imports torch.
"""

from __future__ import annotations

from stancerun.config.experiment import Experiment, build
from stancerun.errors import ConfigError, Problem, show_file
from stancerun.registry.table import Registry
from stancerun.config.schema import baseline_rows


def problems(experiment: Experiment, registry: Registry) -> list[Problem]:
    config, source = experiment.config, show_file(experiment.path)
    found = []

    def add(key: str, messages) -> None:
        found.extend(Problem(source, key, message) for message in messages)

    dataset = build(registry, "datasets", config["data"])
    labels = None
    if callable(getattr(dataset, "check", None)):
        data_problems, labels = dataset.check()
        add("data", data_problems)
    model = build(registry, "models", config["model"])
    if callable(getattr(model, "check", None)):
        add("model", model.check())

    stacked = config.get("ensemble", {}).get("stack", [])
    if stacked:
        from stancerun.contracts import saves_itself

        rows = baseline_rows(config["evaluation"]["baselines"])
        for i, name in enumerate(stacked):
            if not saves_itself(build(registry, "baselines", rows[name])):
                add(f"ensemble.stack[{i}]", [f"baseline '{name}' cannot be stacked: it has no save()/restore() to ship "
                                             "inside the model (see stancerun.Baseline)"])

    # Every metric is built, labels known or not: a factory that cannot work here (an evaluate
    # metric neither cached nor reachable) stops validate and run now, not after training.
    metrics = [build(registry, "metrics", table) for table in config["metrics"]]
    if labels is not None:
        produced = [metric_keys(metric, labels) for metric in metrics]
        keys = {"loss"} | {key for found_keys in produced for key in found_keys or ()}
        wanted = [("training.metric_for_best_model", config["training"]["metric_for_best_model"])]
        if config["evaluation"].get("headline"):
            wanted.append(("evaluation.headline", config["evaluation"]["headline"]))
        for i, table in enumerate(config["callbacks"]):
            callback = build(registry, "callbacks", table)
            wanted += [(f"callbacks[{i}] ({table['use']})", name) for name in getattr(callback, "monitors", ())]
        if all(found_keys is not None for found_keys in produced):  # else: cannot tell
            for key, name in wanted:
                if name.removeprefix("eval_") not in keys:
                    add(key, [f"metric '{name.removeprefix('eval_')}' is not among the keys the experiment's "
                              f"[[metrics]] produce: {', '.join(sorted(keys))}"])
    return found


def metric_keys(metric, labels: list[str]) -> list[str] | None:
    """The keys a metric returns for these labels: its own ``keys``, else its ``from_confusion``
    on a perfect confusion matrix, else the metric itself on a tiny synthetic prediction;
    None when it cannot be told (the metric raised)."""
    import numpy as np

    n = len(labels)
    try:
        if callable(getattr(metric, "keys", None)):
            return list(metric.keys(labels))
        if callable(getattr(metric, "from_confusion", None)):
            return list(metric.from_confusion(np.eye(n, dtype=int), labels))
        from stancerun.contracts import EvalPrediction

        return list(metric(EvalPrediction(np.eye(n) * 4.0, np.arange(n), labels)))
    except Exception:  # a metric that cannot score a tiny prediction is judged on real ones
        return None


def check(experiment: Experiment, registry: Registry) -> None:
    """Raise :class:`ConfigError` listing every problem found."""
    found = problems(experiment, registry)
    if found:
        raise ConfigError(found, show_file(experiment.path))
