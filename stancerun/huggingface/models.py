"""Hugging Face models for model plugins: a name (a local folder, a packaged model, or a hub id)
resolved to where ``from_pretrained`` loads it from; checked without loading it (no torch); loaded
without transformers' progress bars. transformers and huggingface_hub are imported inside the
functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from pathlib import Path


def packaged_model_dir(name: str) -> Path | None:
    """The model directory an installed package ships, found without importing it."""
    try:
        spec = importlib.util.find_spec(name.replace("-", "_"))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (package / "model", package):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def resolve_model(name: str) -> str:
    """Where ``from_pretrained`` should load ``name`` from: a local or packaged directory, else the hub id."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    packaged = packaged_model_dir(name)
    return str(packaged) if packaged is not None else name


#: Files that make a cached hub model complete: its config and (one format of) its weights.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def hub_problems(name: str, revision: str | None) -> list[str]:
    """A hub id checked once: in the local cache when offline, on the hub when online."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import validate_repo_id

    where = "not a folder, not a packaged model"
    try:
        validate_repo_id(name)
    except HFValidationError:
        return [f"model '{name}' not found: {where}, and not a Hugging Face hub id (like 'org/name')"]
    if constants.HF_HUB_OFFLINE:
        cached = lambda filename: isinstance(try_to_load_from_cache(name, filename, revision=revision), str)  # noqa: E731
        if not (cached("config.json") and any(cached(f) for f in WEIGHT_FILES)):
            return [f"model '{name}' not found: {where}, not in the Hugging Face cache (offline)"]
        return []
    try:
        model_info(name, revision=revision)
    except RepositoryNotFoundError:
        return [f"model '{name}' not found: {where}, not on the Hugging Face hub "
                "(or private: log in with `hf auth login`)"]
    except RevisionNotFoundError:
        return [f"model '{name}': the hub has no revision '{revision}'"]
    except Exception as error:  # no network: the load will say more; nothing certain to report here
        return [f"model '{name}': {where}, and the hub could not be asked ({type(error).__name__}); "
                "set HF_HUB_OFFLINE=1 to use the cache only"]
    return []


def model_problems(name: str, revision: str | None) -> list[str]:
    """Whether a model can be loaded, without loading it (no torch): a folder with a config,
    a packaged model, or a hub id that is in the Hugging Face cache (offline) or on the hub."""
    source = resolve_model(name)
    if Path(source).is_dir():
        if not (Path(source) / "config.json").is_file():
            return [f"model '{name}': folder {source} has no config.json (not a transformers model folder)"]
        return []
    return hub_problems(name, revision)


def capped_length(tokenizer, max_length: int) -> int:
    """``max_length``, capped at the tokenizer's ``model_max_length`` (transformers writes a huge
    sentinel there when the model sets none)."""
    limit = getattr(tokenizer, "model_max_length", None) or max_length
    return min(max_length, limit if limit < 1_000_000 else max_length)


@contextlib.contextmanager
def quiet_loading():
    """Silence transformers' per-load progress bars and notices, and peft's deprecation
    warnings: stancerun reports what matters (new head layers) itself."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
