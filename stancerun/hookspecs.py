"""Every hook a stancerun plugin can implement.

Each hook is called once per plugin with ``register(name, factory)``. A factory is called
with the options of the experiment table that names it (``use = "name"``), as keyword
arguments; its signature is the schema those options are validated against.
"""

import pluggy

hookspec = pluggy.HookspecMarker("stancerun")
hookimpl = pluggy.HookimplMarker("stancerun")


@hookspec
def stancerun_register_datasets(register):
    """Register dataset factories: ``factory(**options)`` returns an object whose
    ``load()`` returns a :class:`stancerun.datasets.Splits` (subclass
    :class:`stancerun.datasets.RowDataset` to get labels and splits handled for you)."""


@hookspec
def stancerun_register_models(register):
    """Register model factories: ``factory(**options)`` returns an object whose
    ``load(labels)`` returns an object with ``model`` (sequence classification, one output
    per label), ``tokenizer``, ``max_length``, ``source`` and ``new_modules`` (the names of
    newly initialised layers), like :class:`stancerun_hf.LoadedModel`."""


@hookspec
def stancerun_register_adapters(register):
    """Register adapter factories: ``factory(**options)`` returns an object whose
    ``apply(loaded)`` takes what a model's ``load`` returned and gives back the model to
    train (e.g. wrapped in LoRA, or partly frozen)."""


@hookspec
def stancerun_register_metrics(register):
    """Register metric factories: ``factory(**options)`` returns ``compute(pred)``, which
    takes a :class:`stancerun.EvalPrediction` and returns ``dict[str, float]``."""


@hookspec
def stancerun_register_callbacks(register):
    """Register callback factories: ``factory(**options)`` returns an object with any of
    ``on_train_begin(run)``, ``on_log(run, logs)``, ``on_evaluate(run, metrics)``,
    ``on_save(run, path)``, ``on_train_end(run, results)``."""


KINDS = ("datasets", "models", "adapters", "metrics", "callbacks")
