from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach a model or dataset hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _only_builtin_plugins(monkeypatch):
    """Tests see the built-in plugins only, whatever else is installed, and a fresh registry."""
    from stancerun import plugins

    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def builtin_registry():
    from stancerun.plugins import get_registry

    return get_registry()
