"""stancerun: fine-tune pretrained encoders into text classifiers from a TOML experiment file.

``import stancerun`` is the whole plugin surface: everything a plugin may use is in ``__all__``
(the built-in plugins use nothing else). Each name is imported on first use (PEP 562), so
importing stancerun imports no torch; ``Collator``, ``encode_examples`` and ``model_inputs``
import it when touched. Plugin tests also have :mod:`stancerun.testing`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: name -> the module that defines it, grouped by what a plugin uses it for.
_SURFACE = {
    # hooks, and the option types factories annotate their options with
    "hookimpl": "stancerun.hookspecs",
    "File": "stancerun.options", "Directory": "stancerun.options", "Range": "stancerun.options",
    "Split": "stancerun.options",
    # the contracts: what each kind of object keeps, and what the core hands it
    "Dataset": "stancerun.contracts", "Model": "stancerun.contracts", "Adapter": "stancerun.contracts",
    "Metric": "stancerun.contracts", "Callback": "stancerun.contracts", "Baseline": "stancerun.contracts",
    "LoadedModel": "stancerun.contracts", "Tokenizer": "stancerun.contracts", "Columns": "stancerun.contracts",
    "EvalPrediction": "stancerun.contracts", "Examples": "stancerun.data.rows", "Splits": "stancerun.data.rows",
    # errors a plugin raises: one clear line, exit code 2
    "UsageError": "stancerun.errors", "DataError": "stancerun.errors", "ConfigError": "stancerun.errors",
    # dataset plugins: rows from CSV/JSONL files, and the dataset that turns rows into labelled splits
    "RowDataset": "stancerun.data.rows", "RowSource": "stancerun.data.rows", "read_csv": "stancerun.data.rows",
    "read_jsonl": "stancerun.data.rows", "is_jsonl": "stancerun.data.rows", "read_text": "stancerun.data.rows",
    # model and adapter plugins: Hugging Face models, and batches as the core builds them (torch)
    "resolve_model": "stancerun.huggingface.models", "model_problems": "stancerun.huggingface.models",
    "capped_length": "stancerun.huggingface.models", "quiet_loading": "stancerun.huggingface.models",
    "encode_examples": "stancerun.data.batching", "Collator": "stancerun.data.batching",
    "model_inputs": "stancerun.data.batching",
    # metric plugins: precision, recall and F1 per class from confusion matrices (for from_confusion)
    "per_class_scores": "stancerun.evaluation.stats",
    # callback plugins: the resolved experiment written back as TOML
    "to_toml": "stancerun.config.tomlio:dumps",
}

__all__ = sorted(_SURFACE) + ["__version__"]


def __getattr__(name: str):
    where = _SURFACE.get(name)
    if where is None:
        raise AttributeError(f"module 'stancerun' has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SURFACE))
