"""The fixed parts of an experiment: top-level keys and [training].

Component tables ([data], [model], [adapter], [[metrics]], [[callbacks]]) have no schema
here: their options are the signature of the factory their ``use`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from stancerun import kinds
from stancerun.options import Range

#: section -> (component kind, is a list of tables, default when the section is absent: None = required),
#: for the kinds an experiment names in a top-level table of their own (baselines sit in [evaluation]).
COMPONENT_SECTIONS = {kind.section: (kind.name, kind.many, kind.default) for kind in kinds.KINDS
                      if "." not in kind.section}

#: Keys of a component table that the core handles itself (not passed to the factory).
CORE_OPTIONS = {
    # What to do with evaluation texts that also appear in the training data.
    "data": {"on_leakage": (Literal["warn", "error", "drop"], "warn")},
}

#: The baselines every experiment is scored against unless it says otherwise (built-in plugin
#: stancerun_baselines): per-target majority, TF-IDF + logistic regression, SemEval's n-gram SVM.
BASELINES = tuple(kinds.BY_NAME["baselines"].default)



def baseline_rows(entries: list) -> dict[str, dict]:
    """Row name -> table, for ``[evaluation] baselines`` (names or tables {use = ...}); a name used
    twice (say, two ``ngram_svm`` with different ``C``) gets a numbered row."""
    named = {}
    for entry in entries:
        table = {"use": entry} if isinstance(entry, str) else dict(entry)
        name, n = table["use"], 2
        while name in named:
            name, n = f"{table['use']}_{n}", n + 1
        named[name] = table
    return named


Positive = Range(gt=0)
AtLeastOne = Range(ge=1)
NonNegative = Range(ge=0)


def greater_is_better(metric: str) -> bool:
    """Whether a larger value of this metric key is better (losses and errors: no)."""
    name = metric.removeprefix("eval_")
    return not (name == "loss" or name.endswith(("loss", "mse", "mae")))


@dataclass(frozen=True)
class TopLevel:
    name: str | None = None  # default: the experiment file's stem
    description: str = ""
    seed: int = 42
    output_dir: str = "runs"  # relative to the working directory, like TrainingArguments.output_dir


@dataclass(frozen=True)
class TrainingConfig:
    """Names and meanings as in transformers.TrainingArguments."""

    num_train_epochs: Annotated[float, Positive] = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: Annotated[int, AtLeastOne] = 8
    per_device_eval_batch_size: Annotated[int, AtLeastOne] = 32
    learning_rate: Annotated[float, Positive] = 5e-5
    weight_decay: Annotated[float, NonNegative] = 0.0
    adam_beta1: Annotated[float, Range(ge=0, lt=1)] = 0.9
    adam_beta2: Annotated[float, Range(ge=0, lt=1)] = 0.999
    adam_epsilon: Annotated[float, Positive] = 1e-8
    warmup_ratio: Annotated[float, Range(ge=0, lt=1)] = 0.0
    warmup_steps: Annotated[int, NonNegative] = 0  # wins over warmup_ratio when > 0
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_accumulation_steps: Annotated[int, AtLeastOne] = 1
    max_grad_norm: Annotated[float, NonNegative] = 1.0  # 0 turns clipping off
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    eval_strategy: Literal["no", "steps", "epoch"] = "epoch"
    eval_steps: Annotated[int, AtLeastOne] | None = None  # default: logging_steps
    save_strategy: Literal["no", "steps", "epoch"] = "epoch"
    save_steps: Annotated[int, AtLeastOne] = 500
    save_total_limit: Annotated[int, AtLeastOne] | None = None  # the best checkpoint is always kept
    logging_steps: Annotated[int, AtLeastOne] = 10
    load_best_model_at_end: bool = True
    metric_for_best_model: str = "loss"  # "loss" or a key a metric returns, e.g. "accuracy", "f1_macro"
    greater_is_better: bool | None = None  # default: False for loss/mse/mae, True otherwise
    group_by_length: bool = True  # length-bucketed training batches (shuffled buckets)
    dataloader_num_workers: Annotated[int, NonNegative] = 0
    torch_compile: bool = False
    # stancerun's own: after the run has chosen its model on validation, train anew on train +
    # validation for as many epochs as the chosen model had, and ship that (stancerun.engine.refit).
    refit_on_validation: bool = False

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field checks: (key, message)."""
        found = []
        if self.load_best_model_at_end and self.eval_strategy == "no":
            found.append(("load_best_model_at_end", "needs an evaluation: set eval_strategy to 'steps' or 'epoch'"))
        return found

    @property
    def best_is_greater(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return greater_is_better(self.metric_for_best_model)


@dataclass(frozen=True)
class EvaluationConfig:
    """How results are judged: baselines, uncertainty, calibration, plots."""

    # Registered baselines, each a name or a table {use = "name", option = value}; see BASELINES.
    baselines: list[str | dict] = field(default_factory=lambda: list(BASELINES))
    # The metric key the experiment is judged by: the verdict against the strongest baseline,
    # the order of `compare`, and model selection when metric_for_best_model is not given.
    # Default: metric_for_best_model unless it is the loss, else the first metric's first key.
    headline: str | None = None
    bootstrap_resamples: Annotated[int, NonNegative] = 1000  # 0 turns the intervals off
    bootstrap_seed: int = 0
    confidence: Annotated[float, Range(gt=0, lt=1)] = 0.95
    cv_folds: Annotated[int, NonNegative] = 0  # K >= 2: stratified K-fold cross-validation over the training data
    seeds: list[int] = field(default_factory=list)  # repeat the run once per seed
    # Examples per class, e.g. [8, 16, 32, 64]: one run per size and repeat on stratified draws
    # (stancerun.studies.curve), scored against the number of labelled examples.
    learning_curve: list[Annotated[int, AtLeastOne]] = field(default_factory=list)
    repeats: Annotated[int, AtLeastOne] = 5  # draws per learning-curve size
    calibrate: bool = False  # fit a temperature on the validation split; predict applies it
    plots: bool = True  # PNG figures in the run directory, linked from report.md

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.headline is not None and self.headline.removeprefix("eval_") == "loss":
            found.append(("headline", "expected a metric key (e.g. \"f1_macro\"), not the loss"))
        if self.cv_folds == 1:
            found.append(("cv_folds", "expected 0 (off) or at least 2 folds"))
        if self.cv_folds and self.seeds:
            found.append(("seeds", "use either cv_folds or seeds, not both"))
        if len(set(self.seeds)) != len(self.seeds):
            found.append(("seeds", "seeds repeat"))
        sizes = self.learning_curve
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            found.append(("learning_curve", f"expected sizes in increasing order, each once (e.g. [8, 16, 32, 64]), "
                                            f"got {sizes}"))
        if sizes and (self.cv_folds or self.seeds):
            found.append(("learning_curve", "use either learning_curve or cv_folds/seeds, not both (a learning curve "
                                            "already repeats each size: see repeats)"))
        return found


@dataclass(frozen=True)
class EnsembleConfig:
    """What ships besides the fine-tuned model, fitted on the validation split after training."""

    # Baselines of [evaluation] baselines (by row name) whose scores are stacked with the model's:
    # one weight each, fitted by log-loss on validation; they are saved inside the model.
    stack: list[str] = field(default_factory=list)
    # "headline": per-class offsets tuned on validation for the headline metric; "argmax": none.
    decision: Literal["argmax", "headline"] = "argmax"

    def problems(self) -> list[tuple[str, str]]:
        if len(set(self.stack)) != len(self.stack):
            return [("stack", "a baseline is named twice")]
        return []
