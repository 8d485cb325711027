"""stancerun-acme: an example stancerun plugin, written to be copied.

It registers one component of each kind:

    dataset   acme_jsonl            JSON Lines files, with a label map         (data.py)
    model     acme_bag              a hashed bag-of-words classifier, no transformers (model.py, net.py)
    metric    acme_balanced_error   1 - mean recall over the labels            (metric.py)
    callback  acme_events           logs every callback event to a JSON file   (callback.py)
    baseline  acme_lexicon          keyword counts per label                   (baseline.py)

stancerun imports this module through the entry point in pyproject.toml and calls each hook
once with ``register(name, factory)``. Importing it must stay cheap: `stancerun validate` and
`stancerun plugins` import every installed plugin, so torch is imported only inside the model's
methods (see model.py).
"""

import stancerun
from stancerun_acme.baseline import acme_lexicon
from stancerun_acme.callback import acme_events
from stancerun_acme.data import acme_jsonl
from stancerun_acme.metric import acme_balanced_error
from stancerun_acme.model import acme_bag


@stancerun.hookimpl
def stancerun_register_datasets(register):
    register("acme_jsonl", acme_jsonl)


@stancerun.hookimpl
def stancerun_register_models(register):
    register("acme_bag", acme_bag)


@stancerun.hookimpl
def stancerun_register_metrics(register):
    register("acme_balanced_error", acme_balanced_error)


@stancerun.hookimpl
def stancerun_register_callbacks(register):
    register("acme_events", acme_events)


@stancerun.hookimpl
def stancerun_register_baselines(register):
    register("acme_lexicon", acme_lexicon)
