"""The torch module of ``acme_bag``, in a module of its own so that importing the plugin never
imports torch. Its forward follows the transformers sequence-classification convention, which is
what stancerun's training loop and predict call."""

from types import SimpleNamespace

import torch


class BagClassifier(torch.nn.Module):
    def __init__(self, vocab_size: int, dim: int, num_labels: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, dim, padding_idx=0)
        self.classifier = torch.nn.Linear(dim, num_labels)

    def forward(self, input_ids, attention_mask=None, labels=None, **ignored):
        mask = (input_ids != 0 if attention_mask is None else attention_mask).unsqueeze(-1).float()
        mean = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # padding left out
        logits = self.classifier(mean)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


def build(vocab_size: int, dim: int, num_labels: int, seed: int) -> BagClassifier:
    """Initial weights from a generator of its own: the same for a given seed, and the global
    random state (which stancerun seeds and checkpoints for `resume`) is left alone."""
    model = BagClassifier(vocab_size, dim, num_labels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        model.embed.weight[0].zero_()  # the padding id
    return model
