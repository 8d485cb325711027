"""Built-in metrics, computed with scikit-learn (imported on first use, not at start-up).

Each factory takes the options of its [[metrics]] table and returns ``compute(pred)`` ->
``dict[str, float]``. Key names: ``accuracy``, ``f1_macro``, ``precision_weighted``,
``recall_<label>`` (per class), ``f1_favor_against``, ``mse``, ``mae``. ``hf_evaluate`` (its own
module) bridges to the Hugging Face evaluate library, imported only when an experiment uses it.
"""

from __future__ import annotations

from typing import Literal

import stancerun

Average = Literal["macro", "weighted", "per_class"]

#: Label names that mean "no stance" (left out of f1_favor_against).
NO_STANCE_NAMES = ("none", "neutral", "no_stance", "nostance", "neither")


def _fast(compute, from_confusion):
    """Attach a vectorised twin computed from confusion matrices (``cm[..., true, predicted]``,
    any leading batch shape): the bootstrap evaluates thousands of resamples through it.
    Tests check that both give the same numbers."""
    compute.from_confusion = from_confusion
    return compute


def _prf(cm):
    """Per-class scores from confusion matrices: the core's one implementation, looked up on
    first use so that loading this plugin (as `stancerun plugins` does) stays cheap (no numpy)."""
    return stancerun.per_class_scores(cm)


def _label_ids(pred) -> list[int]:
    return list(range(pred.logits.shape[-1]))


def accuracy():
    """Share of examples whose predicted class is the true class."""

    def compute(pred):
        from sklearn.metrics import accuracy_score

        return {"accuracy": float(accuracy_score(pred.labels, pred.predictions))}

    def from_confusion(cm, names):
        import numpy as np

        return {"accuracy": np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))}

    return _fast(compute, from_confusion)


def _averaged(metric: str, average: Average):
    def compute(pred):
        from sklearn import metrics as skm

        score = getattr(skm, f"{metric}_score")
        labels = _label_ids(pred)
        if average == "per_class":
            values = score(pred.labels, pred.predictions, labels=labels, average=None, zero_division=0)
            return {f"{metric}_{name}": float(v) for name, v in zip(pred.class_names, values)}
        value = score(pred.labels, pred.predictions, labels=labels, average=average, zero_division=0)
        return {f"{metric}_{average}": float(value)}

    def from_confusion(cm, names):
        scores = _prf(cm)
        values, support = scores[metric], scores["support"]
        if average == "per_class":
            return {f"{metric}_{name}": values[..., i] for i, name in enumerate(names)}
        if average == "macro":
            return {f"{metric}_macro": values.mean(axis=-1)}
        return {f"{metric}_weighted": (values * support).sum(axis=-1) / support.sum(axis=-1)}

    return _fast(compute, from_confusion)


def f1(*, average: Average = "macro"):
    """F1 over all classes (macro or support-weighted mean), or one F1 per class."""
    return _averaged("f1", average)


def precision(*, average: Average = "macro"):
    """Precision, averaged like ``f1``; a class never predicted scores 0."""
    return _averaged("precision", average)


def recall(*, average: Average = "macro"):
    """Recall, averaged like ``f1``."""
    return _averaged("recall", average)


def f1_favor_against(*, classes: list[str] | None = None, no_stance: str | None = None):
    """SemEval-2016 Task 6's official score: the mean F1 of the stance classes, the
    no-stance class left out. ``classes`` names the stance classes to average (e.g.
    ["favor", "against"] or ["support", "oppose"]); else every label but ``no_stance``, which
    by default is the label called none/neutral/no_stance."""
    def stance_ids(names):
        if classes is not None and no_stance is not None:
            raise ValueError("f1_favor_against: give classes or no_stance, not both")
        if classes is not None:
            unknown = [c for c in classes if c not in names]
            if unknown or not classes:
                raise ValueError(f"f1_favor_against: classes {unknown or classes} are not among the labels {names}")
            return [names.index(c) for c in classes]
        skip = no_stance if no_stance is not None else next((n for n in names if n.lower() in NO_STANCE_NAMES), None)
        if skip is not None and skip not in names:
            raise ValueError(f"f1_favor_against: no_stance label {skip!r} is not one of {names}")
        return [i for i, n in enumerate(names) if n != skip]

    def compute(pred):
        from sklearn.metrics import f1_score

        value = f1_score(pred.labels, pred.predictions, labels=stance_ids(pred.class_names), average="macro", zero_division=0)
        return {"f1_favor_against": float(value)}

    def from_confusion(cm, names):
        return {"f1_favor_against": _prf(cm)["f1"][..., stance_ids(list(names))].mean(axis=-1)}

    return _fast(compute, from_confusion)


def mse():
    """Mean squared error between predicted and true label ids (ordinal labels), or between
    the scores and targets of a one-output regression head."""

    def compute(pred):
        from sklearn.metrics import mean_squared_error

        return {"mse": float(mean_squared_error(pred.labels, pred.predictions))}

    return _fast(compute, lambda cm, names: {"mse": _id_error(cm, 2)})


def mae():
    """Mean absolute error, like ``mse``."""

    def compute(pred):
        from sklearn.metrics import mean_absolute_error

        return {"mae": float(mean_absolute_error(pred.labels, pred.predictions))}

    return _fast(compute, lambda cm, names: {"mae": _id_error(cm, 1)})


def _id_error(cm, power):
    """Mean |true id - predicted id| ** power, from confusion matrices."""
    import numpy as np

    ids = np.arange(cm.shape[-1])
    cost = np.abs(ids[:, None] - ids[None, :]) ** power
    return (cm * cost).sum(axis=(-2, -1)) / cm.sum(axis=(-2, -1))


#: The scikit-learn metrics (named by hf_evaluate's errors as the offline alternatives).
BUILTIN = (accuracy, f1, precision, recall, f1_favor_against, mse, mae)


@stancerun.hookimpl
def stancerun_register_metrics(register):
    from stancerun_metrics.hf_evaluate import hf_evaluate

    for factory in (*BUILTIN, hf_evaluate):
        register(factory.__name__, factory)
