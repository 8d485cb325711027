"""The contracts between the core and the objects plugins build: the one place that states them.

A hook (``stancerun.hookspecs``) registers a *factory*; an experiment table's options are passed
to it and it returns one of the objects below. The core uses nothing else of them: no option
name, class or module of a built-in plugin is known outside ``plugins/``.

    kind       factory returns          the core calls
    datasets   Dataset                  load(); read(path, labels) for `evaluate --data`
    models     Model                    load(labels), save(...), restore(...), rebuild_options()
    adapters   Adapter                  apply(loaded); save(...)/restore(...) when it keeps its own weights;
                                        prepare(model, train, labels, device): a phase before the loop
    metrics    Metric                   metric(pred) -> dict[str, float]
    callbacks  Callback                 on_*(run, ...), state_dict()/load_state_dict(state)
    baselines  Baseline                 fit(train, labels), predict(examples); save/restore to be stacked

Optional members are listed under "optional"; the core checks required ones when it builds an
object (:func:`conforms`) and says which plugin broke the contract. Importing this module never
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from stancerun import kinds
from stancerun.data.rows import Examples, Splits


# -- what a metric receives (numpy imported lazily) ------------------------------------------
class EvalPrediction:
    """Logits and labels of one evaluation.

    Unpacks as ``logits, labels = pred`` so a transformers ``compute_metrics`` ports unchanged.
    """

    def __init__(self, logits, labels, label_names: Sequence[str] = ()):
        import numpy as np

        self.logits = np.asarray(logits)
        self.labels = np.asarray(labels)
        self.label_names = list(label_names)

    @property
    def predictions(self):
        """Predicted class ids (argmax), or the raw scores of a one-output regression head."""
        if self.logits.ndim == 2 and self.logits.shape[1] == 1:
            return self.logits[:, 0]
        return self.logits.argmax(axis=-1)

    @property
    def class_names(self) -> list[str]:
        """One name per output, for per-class keys (``recall_<name>``): ``label_names`` when there
        is one per output, else the outputs' positions ("0", "1", ...)."""
        n = self.logits.shape[-1] if self.logits.ndim else 0
        return list(self.label_names) if len(self.label_names) == n else [str(i) for i in range(n)]

    @property
    def probabilities(self):
        """Softmax over the classes, computed stably."""
        import numpy as np

        shifted = self.logits - self.logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)

    def __iter__(self):
        return iter((self.logits, self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"EvalPrediction(n={len(self)}, classes={self.logits.shape[-1] if self.logits.ndim else 0})"


# -- datasets -------------------------------------------------------------------------------
@runtime_checkable
class Dataset(Protocol):
    """Where the examples come from.

    ``load()`` returns every split with its label map (subclass
    :class:`stancerun.RowDataset` to get labels, row errors and carving for free).

    Optional:
      ``read(path, labels) -> Examples``: labelled examples from a file the user names, with the
        run's columns and label ids (``stancerun evaluate --data``); without it evaluate says so.
      ``text_column`` / ``text_pair_column`` / ``label_column``: the column names the model was
        trained on; ``predict --input`` reads files by them, and the pair's column in
        predictions.csv is named after ``text_pair_column`` (defaults "text", none, "label").
      ``split_seed``: the seed the dataset carves splits with; cross-validation folds use it too
        (default: the experiment's seed).
      ``check() -> (problems, label names or None)``: every problem ``load`` would raise, found
        without torch (``validate`` and ``run`` call it before anything heavy loads); each problem
        names its file and row. A dataset that cannot check cheaply (it would download) omits it.
    """

    def load(self) -> Splits: ...


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    pair: str | None = None
    label: str = "label"


def columns(dataset) -> Columns:
    """The column names a dataset declares (the optional attributes above), with their defaults."""
    return Columns(getattr(dataset, "text_column", None) or "text", getattr(dataset, "text_pair_column", None),
                   getattr(dataset, "label_column", None) or "label")


# -- models ---------------------------------------------------------------------------------
@runtime_checkable
class Tokenizer(Protocol):
    """What the core asks of a tokenizer (a transformers tokenizer fits as it is).

    Called as ``tokenizer(texts, truncation=True, max_length=n, padding=False)`` or, for sentence
    pairs, ``tokenizer(pairs, texts, ...)``; returns a mapping with ``input_ids`` (one list of ids
    per text, unpadded) and optionally ``token_type_ids``. ``pad_token_id`` pads batches (None: 0).
    """

    pad_token_id: int | None

    def __call__(self, text, text_pair=None, *, truncation: bool, max_length: int, padding: bool) -> Mapping: ...


@dataclass
class LoadedModel:
    """What :meth:`Model.load` and :meth:`Model.restore` return.

    ``model`` is a ``torch.nn.Module`` whose forward takes the batch's ``input_ids``,
    ``attention_mask`` (and ``token_type_ids`` when the tokenizer made them) and optionally
    ``labels``, and returns an object with ``logits`` (N x number of labels) and, given labels,
    ``loss``: the transformers sequence-classification convention.
    """

    model: Any
    tokenizer: Tokenizer
    max_length: int  # texts are truncated to this many tokens
    source: str  # where the weights came from (a directory or hub id), for the record
    new_modules: list[str] = field(default_factory=list)  # newly initialised layers (the head)


@runtime_checkable
class Model(Protocol):
    """A pretrained model and how to save and rebuild it.

    ``load(labels)``: the pretrained model with a fresh head sized to ``labels``.
    ``save(loaded, directory, model=None, state_dict=None)``: write the tokenizer (and what
      rebuilding needs) into ``directory``; when ``model`` is given, also its weights, whole
      (``state_dict``, when given, is the full set of weights gathered from every process:
      save those, not ``model``'s own, which may be a shard).
    ``restore(labels, directory) -> LoadedModel``: the model a ``save`` with ``model`` wrote.
    ``rebuild_options() -> dict``: factory options that build this same model again from any
      working directory and machine (absolute paths, no secrets); they are recorded in
      ``model/stancerun.json`` and passed back to the factory by predict, evaluate and export.

    Optional:
      ``export(loaded, model, directory)``: a standalone model for ``stancerun export``; without it
        export says this model cannot be exported.
      ``export_usage(pair_column) -> str``: Python code that loads the exported folder ("PATH")
        and classifies with it, for the model card; without it, the transformers pipeline's.
      ``check() -> list[str]``: why the model could not be loaded (not found, incomplete), found
        without loading it or importing torch; ``validate`` and ``run`` call it first.
    """

    def load(self, labels: list[str]) -> LoadedModel: ...

    def save(self, loaded: LoadedModel, directory: Path, model=None, state_dict: dict | None = None) -> None: ...

    def restore(self, labels: list[str], directory: Path) -> LoadedModel: ...

    def rebuild_options(self) -> dict: ...


# -- adapters -------------------------------------------------------------------------------
@runtime_checkable
class Adapter(Protocol):
    """How the loaded model trains.

    ``apply(loaded) -> module``: the model to train (e.g. partly frozen, or wrapped in LoRA).

    Optional, together: an adapter that keeps weights of its own (LoRA) saves just those and
    rebuilds the trained model on top of a freshly loaded base; one without them (full,
    frozen) leaves saving the whole model to the :class:`Model`.
      ``save(model, directory, state_dict=None)``: write the adapter's weights (``state_dict``
        as in :meth:`Model.save`).
      ``restore(loaded, directory) -> module``: the trained model for inference, from the
        freshly loaded base and what ``save`` wrote; folded into the base architecture where
        possible, so that export can save it as a plain model.

    Optional: ``prepare(model, train, labels, device)``: a phase of the adapter's own before the
      training loop (the contrastive phase of few-shot training) on the training
      :class:`Examples`, given the module ``apply`` returned and the device to move it to; the
      loop then trains that module as usual. Called once per run, on every process, after the
      seed is set; not again on resume (a checkpoint holds what the phase made).
    """

    def apply(self, loaded: LoadedModel) -> Any: ...


def saves_itself(obj) -> bool:
    """The optional pair ``save``/``restore``, present together: an adapter that keeps its own
    weights, a baseline that can be stacked and shipped inside a model."""
    return callable(getattr(obj, "save", None)) and callable(getattr(obj, "restore", None))


# -- metrics and callbacks -----------------------------------------------------------------
Metric = Callable[[EvalPrediction], "dict[str, float]"]
"""``metric(pred) -> {"name": value}``. Optional attribute ``from_confusion(cm, label_names)``:
the same numbers from confusion matrices ``cm[..., true, predicted]`` (any leading batch shape),
which makes bootstrap intervals fast. Optional ``keys(label_names) -> list[str]``: the keys it
returns, so ``metric_for_best_model`` is checked before training (without it, ``from_confusion``
or a tiny synthetic prediction tells)."""


class Callback(Protocol):
    """Every method is optional; ``run`` is a :class:`stancerun.engine.trainer.RunState` (config,
    output_dir, global_step, epoch, is_main_process, should_stop). Callbacks run on every
    process: guard side effects with ``run.is_main_process``.

    ``on_train_begin(run)``, ``on_log(run, logs)``, ``on_evaluate(run, metrics)``,
    ``on_save(run, path)``, ``on_train_end(run, results)``: see docs/plugins.md for when.
    ``state_dict() -> dict`` and ``load_state_dict(state)``: what the callback must carry across
      a resume (JSON-serialisable); saved in every checkpoint, given back before training goes on.
    ``monitors``: the metric keys it reads in ``on_evaluate``, checked against what the metrics
      produce before training.
    """

    def on_train_begin(self, run) -> None: ...

    def on_log(self, run, logs: dict) -> None: ...

    def on_evaluate(self, run, metrics: dict) -> None: ...

    def on_save(self, run, path: Path) -> None: ...

    def on_train_end(self, run, results: dict) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# -- baselines ------------------------------------------------------------------------------
@runtime_checkable
class Baseline(Protocol):
    """A model that needs no GPU hours, fitted on the training split in seconds and scored on
    the same splits as the fine-tuned model: a fine-tuned model that cannot beat the strongest
    one has not earned its cost.

    ``fit(train, labels)``: learn from the training :class:`Examples` (``labels`` are the label
      names, in id order; ``train.pairs`` holds the text pair, e.g. the stance target, or None).
    ``predict(examples) -> ndarray``: N x len(labels) float scores, higher = more likely; their
      argmax is the prediction. Log-probabilities where the baseline has them, else margins.

    Optional, together: a baseline that can be stacked with the fine-tuned model
    (``[ensemble] stack``) and shipped inside its run directory.
      ``save(directory)``: write what ``predict`` needs (safetensors and JSON; never pickle).
      ``restore(directory, labels)``: load it back into an object built from the same options.
    """

    def fit(self, train: Examples, labels: list[str]) -> None: ...

    def predict(self, examples: Examples) -> Any: ...


#: kind -> the methods an object of that kind must have (the rest of each contract is optional).
REQUIRED = {kind.name: kind.required for kind in kinds.KINDS}


def conforms(kind: str, obj) -> list[str]:
    """The required methods ``obj`` lacks (empty when it keeps its contract)."""
    return [name for name in REQUIRED[kind] if not callable(getattr(obj, name, None))]


__all__ = ["Adapter", "Baseline", "Callback", "Columns", "Dataset", "EvalPrediction", "Examples", "LoadedModel", "Metric", "Model", "Splits",
           "Tokenizer", "columns", "conforms", "saves_itself"]
