"""One run, start to finish: accelerator, components, training, and the run directory."""

from __future__ import annotations

import time
from pathlib import Path

from stancerun import artifacts
from stancerun.config import Experiment
from stancerun.report import Reporter, Summary, markdown, softmax


def make_accelerator(training):
    import torch
    from accelerate import Accelerator

    precision = training.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        precision = "no"  # fp16 autocast needs a GPU; bf16 also works on CPUs
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=training.gradient_accumulation_steps,
                       dynamo_backend="inductor" if training.torch_compile else None)


def run_experiment(experiment: Experiment, output_dir: str | None = None, dry_run: bool = False, registry=None) -> Path | None:
    """Train, evaluate and save; return the run directory (None for a dry run)."""
    from accelerate.utils import broadcast_object_list, set_seed

    from stancerun.engine import Trainer, build_components, plan_steps
    from stancerun.plugins import get_registry

    started = time.perf_counter()
    registry = registry or get_registry()
    training = experiment.training
    accelerator = make_accelerator(training)
    reporter = Reporter(accelerator.is_main_process)
    set_seed(experiment.config["seed"])  # before the head is initialised
    components = build_components(experiment, registry)

    run_dir = None
    if not dry_run:
        # The main process names the run directory; every process uses that name.
        holder = [str(artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir))
                  if accelerator.is_main_process else None]
        run_dir = Path(broadcast_object_list(holder)[0])
    reporter.header(experiment, components, accelerator, run_dir)
    if dry_run:
        trainer = Trainer(experiment, components, accelerator, None, reporter)
        train_loader, _ = trainer.loaders()
        _, total, epochs = plan_steps(len(train_loader), training, accelerator.num_processes)
        reporter.plan(trainer, total, epochs)
        reporter.console.print("[bold yellow]dry run:[/] nothing was trained or written")
        return None

    if accelerator.is_main_process:
        artifacts.atomic_write(run_dir / "config.toml", experiment.to_toml())
        env = artifacts.environment(accelerator, experiment, components.splits.files, registry)
        artifacts.write_json(run_dir / "environment.json", env)
    trainer = Trainer(experiment, components, accelerator, run_dir, reporter)
    outcome = trainer.fit()
    results = outcome["results"]
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(outcome["model"])
        artifacts.save_model(model, components.loaded.tokenizer, run_dir / "model", trainer.model_info())
        final = outcome["final"]
        validation = components.splits.validation
        probabilities = softmax(final.logits)
        artifacts.atomic_write(run_dir / "predictions.csv", artifacts.predictions_csv(
            validation.texts, validation.pairs, final.labels.tolist(), probabilities.argmax(axis=1).tolist(), probabilities,
            components.splits.labels, experiment.config["data"].get("text_pair_column") or "text_pair"))
        artifacts.write_json(run_dir / "results.json", results)
        summary = Summary.of(results, final, components.splits.labels, time.perf_counter() - started)
        artifacts.atomic_write(run_dir / "report.md", markdown(summary, experiment, env))
        trainer.callback("on_train_end", results)
        reporter.final(summary, run_dir)
    else:
        trainer.callback("on_train_end", results)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir
