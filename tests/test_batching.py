"""Batches: padded to their longest member (never to max_length), length-bucketed for
training, length-sorted for evaluation with results back in input order."""

from __future__ import annotations

from collections import Counter

import torch

from stancerun.data.batching import Collator, Encoded, LengthBucketBatches, model_inputs, sorted_batches


def encoded(lengths: list[int]) -> Encoded:
    return Encoded([[5] * n for n in lengths], [[0] * n for n in lengths], list(range(len(lengths))))


def test_collator_pads_to_the_longest_member_only():
    enc = encoded([3, 7, 5, 40])
    batch = Collator(enc, pad_token_id=0)([0, 1, 2])
    assert batch["input_ids"].shape == (3, 7)  # not 40, and never max_length
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 7, 5]
    assert batch["input_ids"][0, 3:].eq(0).all() and batch["labels"].tolist() == [0, 1, 2]
    assert batch["index"].tolist() == [0, 1, 2] and set(model_inputs(batch)) == {"input_ids", "attention_mask", "token_type_ids"}


def test_length_buckets_cover_every_example_once_and_reshuffle_each_epoch():
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    sampler = LengthBucketBatches(lengths, batch_size=8, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 125
        assert Counter(i for b in batches for i in b) == Counter(range(1000))
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    # grouping by length: far less padding than random batches
    padding = lambda batches: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    random_batches = list(LengthBucketBatches(lengths, 8, seed=3, group_by_length=False))
    assert padding(epochs[0]) < padding(random_batches) / 5
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # the same seed and epoch give the same order (resume relies on it)


def test_sorted_batches_are_longest_first_and_complete():
    lengths = [4, 9, 1, 9, 6]
    batches = sorted_batches(lengths, 2)
    assert [i for b in batches for i in b] == [1, 3, 4, 0, 2]
    assert all(lengths[b[0]] >= lengths[b[-1]] for b in batches)


def test_predict_logits_come_back_in_input_order(tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stancerun.inference.predict import predict_logits

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).eval()
    texts = ["good", "the very new city park plan is about our street", "bad awful", "a table"]
    together = predict_logits(model, tokenizer, texts, None, 32, batch_size=2)
    with torch.no_grad():
        one_by_one = [model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts]
    for got, want in zip(together, one_by_one):
        assert abs(got - want).max() < 1e-5
