"""Built-in callbacks: early_stopping, wandb, tensorboard.

A callback is any object with some of ``on_train_begin(run)``, ``on_log(run, logs)``,
``on_evaluate(run, metrics)``, ``on_save(run, path)``, ``on_train_end(run, results)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import stancerun
from stancerun import Range


class EarlyStopping:
    def __init__(self, patience: int, threshold: float, metric: str | None):
        self.patience, self.threshold, self.metric = patience, threshold, metric
        self.best = None
        self.bad_evaluations = 0
        # The metric key it reads, checked before training (default: metric_for_best_model, checked anyway).
        self.monitors = [metric.removeprefix("eval_")] if metric else []

    def on_evaluate(self, run, metrics):
        training = run.config["training"]
        name = (self.metric or training["metric_for_best_model"]).removeprefix("eval_")
        if name not in metrics:
            raise KeyError(f"early_stopping: metric '{name}' not among the evaluation's {sorted(metrics)}")
        value = metrics[name]
        greater = run.greater_is_better if self.metric is None else not name.endswith(("loss", "mse", "mae"))
        improved = self.best is None or (value - self.best > self.threshold if greater else self.best - value > self.threshold)
        if improved:
            self.best, self.bad_evaluations = value, 0
        else:
            self.bad_evaluations += 1
            if self.bad_evaluations >= self.patience:
                run.should_stop = True

    # Saved in checkpoints, so a resumed run stops where the uninterrupted one would.
    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evaluations = state["best"], state["bad_evaluations"]


def early_stopping(*, patience: Annotated[int, Range(ge=1)] = 2, threshold: Annotated[float, Range(ge=0)] = 0.0,
                   metric: str | None = None):
    """Stop after ``patience`` evaluations without an improvement larger than ``threshold``
    in ``metric`` (default: training.metric_for_best_model)."""
    return EarlyStopping(patience, threshold, metric)


class WandbLogger:
    """Logs config, every log/evaluation, the final results, and the report as an artifact."""

    def __init__(self, options: dict):
        self.options = options
        self.run = None

    def on_train_begin(self, run):
        if not run.is_main_process:
            return
        import wandb

        self.run = wandb.init(config=run.config, dir=str(run.output_dir), name=self.options.pop("name", None) or run.config["name"],
                              **{k: v for k, v in self.options.items() if v is not None})

    def on_log(self, run, logs):
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in logs.items()}, step=run.global_step)

    def on_evaluate(self, run, metrics):
        if self.run is not None:
            self.run.log({f"eval/{k}": v for k, v in metrics.items()}, step=run.global_step)

    def on_train_end(self, run, results):
        if self.run is None:
            return
        import wandb

        for section in ("baseline", "final", "train"):
            for key, value in (results.get(section) or {}).items():
                if isinstance(value, (int, float)):
                    self.run.summary[f"{section}/{key}"] = value
        report = run.output_dir / "report.md"
        if report.exists():
            artifact = wandb.Artifact(f"{run.config['name']}-report", type="report")
            artifact.add_file(str(report))
            self.run.log_artifact(artifact)
        self.run.finish()
        self.run = None


def wandb(*, project: str | None = None, entity: str | None = None, name: str | None = None,
          tags: list[str] | None = None, mode: Literal["online", "offline", "disabled"] | None = None):
    """Weights & Biases logging (pip install stancerun[wandb]); credentials come from the
    environment, never from the experiment file."""
    return WandbLogger({"project": project, "entity": entity, "name": name, "tags": tags, "mode": mode})


class TensorBoardLogger:
    def __init__(self, log_dir: str | None):
        self.log_dir = log_dir
        self.writer = None

    def on_train_begin(self, run):
        if not run.is_main_process:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir or str(run.output_dir / "tensorboard"))
        self.writer.add_text("config", "```toml\n" + stancerun.to_toml(run.config) + "\n```")

    def _scalars(self, prefix, values, step):
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def on_log(self, run, logs):
        if self.writer is not None:
            self._scalars("train", logs, run.global_step)

    def on_evaluate(self, run, metrics):
        if self.writer is not None:
            self._scalars("eval", metrics, run.global_step)

    def on_train_end(self, run, results):
        if self.writer is None:
            return
        self._scalars("final", results.get("final") or {}, run.global_step)
        self.writer.close()
        self.writer = None


def tensorboard(*, log_dir: str | None = None):
    """TensorBoard event files (default: the run directory's tensorboard/; needs the tensorboard package)."""
    return TensorBoardLogger(log_dir)


@stancerun.hookimpl
def stancerun_register_callbacks(register):
    register("early_stopping", early_stopping)
    register("wandb", wandb)
    register("tensorboard", tensorboard)
