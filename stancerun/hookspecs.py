"""Every hook a stancerun plugin can implement.

Each hook is called once per plugin with ``register(name, factory)``. A factory is called
with the options of the experiment table that names it (``use = "name"``), as keyword
arguments; its signature is the schema those options are validated against. What the object
it returns must do is stated in :mod:`stancerun.contracts`, offered as ``stancerun.Dataset``, ``stancerun.Model``, ...
"""

import pluggy

from stancerun import kinds

hookspec = pluggy.HookspecMarker("stancerun")
hookimpl = pluggy.HookimplMarker("stancerun")


@hookspec
def stancerun_register_datasets(register):
    """Register dataset factories: ``factory(**options)`` returns a
    :class:`stancerun.Dataset` (``load()`` gives the splits; subclass
    :class:`stancerun.RowDataset` to get labels, splits and ``read`` for free)."""


@hookspec
def stancerun_register_models(register):
    """Register model factories: ``factory(**options)`` returns a :class:`stancerun.Model`,
    which loads the pretrained model (a :class:`stancerun.LoadedModel`), saves the
    trained one and rebuilds it from what it saved."""


@hookspec
def stancerun_register_adapters(register):
    """Register adapter factories: ``factory(**options)`` returns a
    :class:`stancerun.Adapter`, whose ``apply(loaded)`` gives the model to train (and,
    for an adapter with weights of its own, ``save``/``restore`` them)."""


@hookspec
def stancerun_register_metrics(register):
    """Register metric factories: ``factory(**options)`` returns a :data:`stancerun.Metric`:
    ``compute(pred)`` takes a :class:`stancerun.EvalPrediction` and returns ``dict[str, float]``."""


@hookspec
def stancerun_register_callbacks(register):
    """Register callback factories: ``factory(**options)`` returns a
    :class:`stancerun.Callback`: any of ``on_train_begin(run)``, ``on_log(run, logs)``,
    ``on_evaluate(run, metrics)``, ``on_save(run, path)``, ``on_train_end(run, results)``, and
    ``state_dict``/``load_state_dict`` to carry its state across a resume."""


@hookspec
def stancerun_register_baselines(register):
    """Register baseline factories: ``factory(**options)`` returns a
    :class:`stancerun.Baseline` (``fit(train, labels)``, ``predict(examples)``;
    ``save``/``restore`` to be stacked with the fine-tuned model). Experiments name them in
    ``[evaluation] baselines``."""


#: The kinds, in the order they are registered and listed (stancerun.kinds has one row per kind).
KINDS = tuple(kind.name for kind in kinds.KINDS)
