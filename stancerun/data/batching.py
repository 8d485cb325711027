"""From examples to model inputs: tokenize once per split, pad each batch to its longest
member (never to max_length), length-bucketed training batches, length-sorted evaluation.

Padding to 512 as the seed notebook did costs ~30x on CPU for tweet-length texts; sorting by
length makes each batch's padding small without changing what the model sees.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from stancerun.data.order import sorted_batches  # noqa: F401  (torch-free; imported from here too)
from stancerun.data.rows import Examples

#: How many batches a shuffled "mega-batch" spans before sorting it by length
#: (as transformers' LengthGroupedSampler): big enough to group lengths, small enough to stay random.
MEGABATCH_FACTOR = 50


@dataclass
class Encoded:
    """Token ids of one split, unpadded; ``labels[i]`` is -1 when unknown (prediction)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, labels: list[int] | None = None) -> Encoded:
    """Tokenize a whole split in one call (fast tokenizers batch it in Rust).

    A pair is encoded as (pair, text): the target first, as in stance-detection practice."""
    args = (pairs, texts) if pairs is not None else (texts,)
    enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), list(labels) if labels is not None else [-1] * len(texts))


def encode_examples(tokenizer, examples: Examples, max_length: int) -> Encoded:
    return encode(tokenizer, examples.texts, examples.pairs, max_length, examples.labels)


class IndexDataset(torch.utils.data.Dataset):
    """Yields example indices; the collator builds the padded tensors."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class Collator:
    """Pads a batch of example indices to its longest member."""

    def __init__(self, encoded: Encoded, pad_token_id: int):
        self.encoded = encoded
        self.pad = pad_token_id

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        enc = self.encoded
        width = max(len(enc.input_ids[i]) for i in indices)
        input_ids = torch.full((len(indices), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(indices), width), dtype=torch.long)
        token_types = torch.zeros((len(indices), width), dtype=torch.long) if enc.token_type_ids is not None else None
        for row, i in enumerate(indices):
            ids = enc.input_ids[i]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
            if token_types is not None:
                token_types[row, : len(ids)] = torch.tensor(enc.token_type_ids[i], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention,
                 "labels": torch.tensor([enc.labels[i] for i in indices], dtype=torch.long),
                 "index": torch.tensor(indices, dtype=torch.long)}
        if token_types is not None:
            batch["token_type_ids"] = token_types
        return batch


class LengthBucketBatches(torch.utils.data.Sampler):
    """Training batches of similar lengths, in a new random order every epoch.

    Shuffle all indices, cut them into mega-batches, sort each by length, cut into batches, and
    shuffle the batches: each epoch sees every example once, padding stays small, and no
    batch is always the short one (unlike a global sort)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length:
            yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        mega = self.batch_size * MEGABATCH_FACTOR
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        yield from batches


def model_inputs(batch: dict) -> dict:
    """What the model's forward takes (the collator also carries labels and example indices)."""
    return {k: v for k, v in batch.items() if k not in ("labels", "index")}
