"""Model ``acme_bag``: the mean of hashed word embeddings, then a linear layer. No transformers.

What stancerun asks of a model (stancerun.Model): ``load(labels)`` gives a fresh model,
``save`` writes what ``restore`` needs to rebuild the trained one in another process (`stancerun
predict RUN_DIR`), and ``rebuild_options()`` says which factory options build this model again.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Annotated

from stancerun import LoadedModel, Range
from stancerun_acme.text import words

WEIGHTS, CONFIG = "acme_bag.safetensors", "acme_bag.json"  # safetensors, never pickle


class HashTokenizer:
    """Words hashed into ``buckets`` ids: no vocabulary to fit, since load() sees no data.
    Called the way the core calls a transformers tokenizer (stancerun.Tokenizer)."""

    pad_token_id = 0
    unknown_id = 1  # an empty text still gets one token
    first_id = 2  # ids 0 and 1 are taken

    def __init__(self, buckets: int):
        self.buckets = buckets

    def ids(self, text: str, salt: str = "") -> list[int]:
        # crc32, not hash(): Python salts str hashes per process, and predict runs in another one.
        ids = [self.first_id + zlib.crc32((salt + word).encode()) % self.buckets for word in words(text)]
        return ids or [self.unknown_id]

    def __call__(self, text, text_pair=None, *, truncation: bool, max_length: int, padding: bool):
        if text_pair is None:
            rows = [self.ids(t) for t in text]
        else:  # called as tokenizer(pairs, texts): the target's words are hashed apart from the text's
            rows = [self.ids(p, "target:") + self.ids(t) for p, t in zip(text, text_pair)]
        return {"input_ids": [row[:max_length] if truncation else row for row in rows]}


class AcmeBag:
    def __init__(self, dim: int, buckets: int, max_length: int, seed: int):
        self.dim, self.buckets, self.max_length, self.seed = dim, buckets, max_length, seed

    def rebuild_options(self) -> dict:
        return {"dim": self.dim, "buckets": self.buckets, "max_length": self.max_length, "seed": self.seed}

    def load(self, labels):
        from stancerun_acme.net import build  # torch, imported only when a model is really needed

        model = build(self.buckets + HashTokenizer.first_id, self.dim, len(labels), self.seed)
        # Every layer is new (there is no pretrained part): adapters that train or save only the
        # new modules (frozen, lora's head) need to know.
        return LoadedModel(model, HashTokenizer(self.buckets), self.max_length, source="stancerun-acme:hashed-bag",
                           new_modules=["embed", "classifier"])

    def save(self, loaded, directory, model=None, state_dict=None):
        directory = Path(directory)
        config = {"dim": self.dim, "buckets": loaded.tokenizer.buckets, "max_length": loaded.max_length}
        (directory / CONFIG).write_text(json.dumps(config), encoding="utf-8")
        if model is not None:  # None when the adapter saves weights of its own
            from safetensors.torch import save_file

            # state_dict, when given, holds every process's weights; model may be just one shard.
            weights = state_dict if state_dict is not None else model.state_dict()
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(directory / WEIGHTS))

    def restore(self, labels, directory):
        from safetensors.torch import load_file

        from stancerun_acme.net import build

        directory = Path(directory)
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        model = build(config["buckets"] + HashTokenizer.first_id, config["dim"], len(labels), self.seed)
        model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
        return LoadedModel(model, HashTokenizer(config["buckets"]), config["max_length"], source=str(directory))

    # No export(): `stancerun export` then says this model cannot be exported (there is no
    # transformers format to export it to).


def acme_bag(*, dim: Annotated[int, Range(ge=1)] = 32, buckets: Annotated[int, Range(ge=1)] = 4096,
             max_length: Annotated[int, Range(ge=1)] = 64, seed: int = 0):
    """A bag of hashed word embeddings and a linear layer: trains in seconds on a CPU."""
    return AcmeBag(dim, buckets, max_length, seed)
