"""``[training] refit_on_validation``: once the run has chosen its model on the validation split,
train the same experiment anew on train + validation, for as many epochs as the chosen model had
trained, and ship that model.

Why: with a few labelled examples per class, the split held out to choose the epoch is half the
labels, and a model trained on all of them is better than one chosen on half (docs/results.md
measures it). What stays honest: every validation figure (the report's tables, the calibration
temperature, the verdict against the baselines, an ``[ensemble]``'s weights, predictions.csv) is the
first pass's, whose model never saw the validation split; the test split is scored with the model
that ships. The second pass keeps no checkpoints and runs no callbacks: a run interrupted during it
resumes the first pass from its last checkpoint and refits again.
"""

from __future__ import annotations

import dataclasses

from stancerun.config.experiment import Experiment
from stancerun.rundir.results import RefitFigures, TrainFigures


def kept_epochs(train: TrainFigures | dict) -> float:
    """Epochs the shipped first-pass model had trained: to its best step when that was restored.
    ``train``: results.json's "train" figures, or their JSON."""
    return (TrainFigures.from_json(train) if isinstance(train, dict) else train).kept_epochs()


def second_pass(experiment: Experiment, epochs: float) -> Experiment:
    """The experiment that trains on train + validation: ``epochs`` long, nothing to choose."""
    config = {**experiment.config, "callbacks": []}
    config["training"] = {**experiment.config["training"], "num_train_epochs": epochs, "max_steps": -1,
                          "eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                          "refit_on_validation": False}
    return Experiment(experiment.path, config)


def refit(experiment: Experiment, components, accelerator, reporter, first, registry):
    """Train anew on train + validation; returns (the outcome to ship, the components that built
    its model). The outcome is ``first``'s (a stancerun.engine.trainer.Outcome) with the new
    model, its test evaluation and, in ``train.refit``, how the second pass trained."""
    from accelerate.utils import set_seed

    from stancerun.components.assembly import build_model
    from stancerun.data.rows import concat
    from stancerun.engine.trainer import Trainer, release_freed_memory

    epochs = first.train.kept_epochs()
    again = second_pass(experiment, epochs)
    splits = components.splits
    union = dataclasses.replace(splits, train=concat(splits.train, splits.validation))
    release_freed_memory()
    set_seed(experiment.config["seed"])  # the head starts as the first pass's did
    model_component, loaded, adapter, model = build_model(again, registry, splits.labels)
    shipped = dataclasses.replace(components, splits=union, model_component=model_component, loaded=loaded,
                                  adapter=adapter, model=model, callbacks=[])
    reporter.console.print(f"[bold]refit:[/] training anew on train + validation ({len(union.train)} examples) for "
                           f"{epochs:g} epochs, the chosen model's; validation figures stay the first pass's")
    second = Trainer(again, shipped, accelerator, None, reporter).fit()
    trained = second.train
    train = dataclasses.replace(first.train, refit=RefitFigures(trained.train_samples, trained.epochs, trained.global_step,
                                                                trained.runtime_s))
    return dataclasses.replace(first, model=second.model, test=second.test, train=train), shipped
