"""``use = "hf_evaluate"``: any metric of the Hugging Face ``evaluate`` library as a [[metrics]] entry.

``evaluate`` is an optional dependency (``pip install 'stancerun[evaluate]'``), imported when the
factory runs, never when the plugin loads: ``stancerun plugins`` stays light. ``validate`` and ``run``
build every metric before anything heavy loads, so a metric that cannot be had (not installed, not
cached while the hub is offline, no script at the path given) stops them there, with one message.

Keys: the metric's own result keys, each prefixed with ``prefix`` as written. A list result (one
value per class, e.g. evaluate's ``f1`` with ``null = ["average"]``, i.e. ``average=None``) becomes
one key per item, ``<key>_<label>`` when it has one item per label, else ``<key>_<position>``; a
nested table becomes ``<key>_<inner key>``. Results that are not numbers (strings, matrices) are
left out. Every other key of the table is passed to the metric's ``compute()`` as it is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stancerun import UsageError

#: evaluate metric -> the built-in metric (scikit-learn, no download) that computes the same.
BUILTIN_TWIN = {"accuracy": "accuracy", "f1": "f1", "precision": "precision", "recall": "recall",
                "mse": "mse", "mae": "mae"}
#: Values of HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE that mean "offline" (as huggingface_hub and evaluate read them).
TRUE = {"1", "ON", "YES", "TRUE"}
OFFLINE_VARS = ("HF_EVALUATE_OFFLINE", "HF_HUB_OFFLINE")
#: The hub namespaces evaluate looks a bare name up in, in its order.
HUB_KINDS = ("metric", "comparison", "measurement")
#: compute()'s inputs: filled from the evaluation, never from the experiment.
INPUTS = ("predictions", "references")


def hf_evaluate(*, name: str, prefix: str = "", config_name: str | None = None, null: list[str] | None = None,
                **options):
    """A metric of the Hugging Face evaluate library, by hub name or local script; other keys go to its compute()."""
    if not name.strip():
        raise UsageError("metric 'hf_evaluate': name is empty (an evaluate metric name, or a local script directory)")
    both = [key for key in null or () if key in options]
    if both:
        raise UsageError(f"metric 'hf_evaluate' ({name}): {', '.join(both)} both set and listed in null")
    options = {**options, **{key: None for key in null or ()}}
    reserved = [key for key in INPUTS if key in options]
    if reserved:
        raise UsageError(f"metric 'hf_evaluate' ({name}): {' and '.join(reserved)} come from the evaluation and "
                         "cannot be set in the experiment")
    metric = _load(name, config_name)
    _check_options(metric, name, options)

    def compute(pred):
        results = metric.compute(predictions=pred.predictions, references=pred.labels, **options)
        found: dict[str, float] = {}
        for key, value in (results or {}).items():
            _numbers(str(key), value, pred.class_names, found)  # the built-ins' per-class key names
        if not found:
            raise ValueError(f"metric 'hf_evaluate' ({name}) returned no number: {results!r}")
        return {prefix + key: value for key, value in found.items()}

    return compute


# -- loading ------------------------------------------------------------------------------------
def _load(name: str, config_name: str | None):
    import importlib.util

    if importlib.util.find_spec("evaluate") is None:
        raise UsageError(f"metric 'hf_evaluate' ({name}) needs the evaluate library: pip install "
                         f"'stancerun[evaluate]'. Or {_instead(name)}")
    where = _local_script(name)
    offline = [var for var in OFFLINE_VARS if os.environ.get(var, "").strip().upper() in TRUE]
    if where is None and offline:
        # Offline, evaluate would still try the hub first (under HF_HUB_OFFLINE alone, really over the
        # network): the cached copy of the script is loaded as the local script it is.
        where = _cached_script(name)
        if where is None:
            why, instead = ", ".join(f"{var}={os.environ[var]}" for var in offline), _instead(name)
            raise UsageError(f"metric 'hf_evaluate': the evaluate metric '{name}' is not in the local cache "
                             f"({_modules_cache()}) and the hub is offline ({why}). {instead[0].upper() + instead[1:]}; "
                             "or load it once while online, or set name to a local metric script directory")
    import evaluate

    try:
        return evaluate.load(str(where or name), config_name=config_name, keep_in_memory=True)
    except Exception as error:  # not on the hub, no network, a dependency missing, a broken script
        raise UsageError(f"metric 'hf_evaluate': could not load the evaluate metric '{name}': "
                         f"{type(error).__name__}: {str(error).rstrip('.')}. Or {_instead(name)}") from error


def _local_script(name: str) -> Path | None:
    """The local metric script ``name`` points to (as evaluate.load reads it: a ``.py`` file, or a
    directory holding ``<directory name>.py``); None for a hub name."""
    path = Path(name).expanduser()
    if name.endswith(".py"):
        if path.is_file():
            return path
        raise UsageError(f"metric 'hf_evaluate': no metric script at {path.resolve()}")
    if (path / f"{path.name}.py").is_file():
        return path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or path.exists():
        raise UsageError(f"metric 'hf_evaluate': no evaluate metric script at {path.resolve()}: a local metric is a "
                         f"directory holding a script of the same name ({path.name}/{path.name}.py), or the .py file")
    return None


def _modules_cache() -> Path:
    """Where evaluate keeps the metric scripts it downloaded: evaluate.config's, once evaluate is
    imported (it reads the environment then), else the same rule without importing it."""
    config = sys.modules.get("evaluate.config")
    base = Path(config.HF_MODULES_CACHE) if config is not None else _hf_modules_cache()
    return base / "evaluate_modules" / "metrics"


def _hf_modules_cache() -> Path:
    xdg = os.getenv("XDG_CACHE_HOME", "~/.cache")
    home = os.path.expanduser(os.getenv("HF_HOME", os.path.join(xdg, "huggingface")))
    return Path(os.getenv("HF_MODULES_CACHE", os.path.join(home, "modules"))).expanduser()


def _cached_script(name: str) -> Path | None:
    """The newest cached copy of a hub metric's script, where evaluate's own cache look-up finds it."""
    root, stem = _modules_cache(), name.split("/")[-1]
    folders = [name.replace("/", "--")] if "/" in name else [f"evaluate-{kind}--{name}" for kind in HUB_KINDS]
    for folder in folders:
        scripts = [s for s in (root / folder).glob(f"*/{stem}.py") if len(s.parent.name) == 64]
        if scripts:
            return max(scripts, key=lambda s: s.stat().st_mtime)
    return None


def _instead(name: str) -> str:
    """What to use instead: the built-in twin of the metric, else the built-in metrics."""
    twin = BUILTIN_TWIN.get(name.split("/")[-1].lower())
    if twin is not None:
        return f'use the built-in metric instead (scikit-learn, nothing to download): [[metrics]] use = "{twin}"'
    from stancerun_metrics import BUILTIN

    return ("use a built-in metric instead (scikit-learn, nothing to download): "
            + ", ".join(factory.__name__ for factory in BUILTIN))


def _check_options(metric, name: str, options: dict) -> None:
    """Options its compute() would refuse, found now rather than at the first evaluation."""
    import inspect

    try:
        parameters = inspect.signature(metric._compute).parameters
    except (AttributeError, TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in options if key not in parameters]
    if unknown:
        accepted = [p.name for p in parameters.values() if p.name not in INPUTS and p.kind is not p.VAR_POSITIONAL]
        raise UsageError(f"metric 'hf_evaluate': the evaluate metric '{name}' takes no option "
                         f"{', '.join(repr(k) for k in unknown)} (its options: {', '.join(accepted) or 'none'})")


# -- results ------------------------------------------------------------------------------------
def _numbers(key: str, value, names: list[str], found: dict) -> None:
    """The numbers in one result, as flat keys (see the module's docstring)."""
    import numpy as np

    if isinstance(value, dict):
        for inner, item in value.items():
            _numbers(f"{key}_{inner}", item, names, found)
        return
    try:
        array = np.asarray(value)
    except ValueError:  # a ragged list
        return
    if array.dtype.kind not in "iuf":
        return
    if array.ndim == 0:
        found[key] = float(array)
    elif array.ndim == 1:
        labels = names if len(array) == len(names) else [str(i) for i in range(len(array))]
        found.update({f"{key}_{label}": float(v) for label, v in zip(labels, array)})
