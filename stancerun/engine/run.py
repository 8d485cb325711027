"""One run, start to finish: accelerator, components, training, analysis, run directory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stancerun.rundir import artifacts
from stancerun.engine import checkpoint
from stancerun.config import tomlio
from stancerun.config.experiment import Experiment
from stancerun.errors import UsageError
from stancerun.reporting.report import Reporter, Summary, markdown


def make_accelerator(training):
    import os

    import torch
    from accelerate import Accelerator

    precision = training.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        precision = "no"  # fp16 autocast needs a GPU; bf16 also works on CPUs
    # Accelerate only sets up a multi-process CPU run (gloo) when told it is on the CPU.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=training.gradient_accumulation_steps,
                       dynamo_backend="inductor" if training.torch_compile else None, cpu=multi_cpu)


def run_experiment(experiment: Experiment, output_dir: str | None = None, dry_run: bool = False, registry=None,
                   splits=None, quiet: bool = False, resume: Path | None = None, callbacks=()) -> Path | None:
    """Train, evaluate and save; return the run directory (None for a dry run).
    ``splits`` replaces the dataset's own (cross-validation); ``quiet`` prints nothing;
    ``resume`` is an interrupted run's directory, continued from its last checkpoint;
    ``callbacks`` are added to the experiment's own (a sweep's pruning)."""
    from accelerate.utils import broadcast_object_list, set_seed

    from stancerun.components.assembly import build_components
    from stancerun.engine.trainer import Trainer, plan_steps
    from stancerun.registry.discovery import get_registry

    started = time.perf_counter()
    registry = registry or get_registry()
    training = experiment.training
    accelerator = make_accelerator(training)
    reporter = Reporter(accelerator.is_main_process and not quiet)
    set_seed(experiment.config["seed"])  # before the head is initialised
    components = build_components(experiment, registry, splits)
    components.callbacks.extend(callbacks)

    run_dir = resume
    if not dry_run and resume is None:
        # The main process names the run directory; every process uses that name.
        holder = [str(artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir))
                  if accelerator.is_main_process else None]
        run_dir = Path(broadcast_object_list(holder)[0])
    reporter.header(experiment, components, accelerator, run_dir)
    reporter.data(components.data_report)
    if dry_run:
        trainer = Trainer(experiment, components, accelerator, None, reporter)
        train_loader, _ = trainer.loaders()
        _, total, epochs = plan_steps(len(train_loader), training, accelerator.num_processes)
        reporter.plan(trainer, total, epochs)
        if training.refit_on_validation:
            reporter.console.print("then trained anew on train + validation for the chosen model's epochs "
                                   "(refit_on_validation)")
        reporter.console.print("[bold yellow]dry run:[/] nothing was trained or written")
        return None

    trainer = None
    with artifacts.run_status(run_dir, accelerator.is_main_process, lambda: trainer.run.global_step if trainer else 0):
        env = None
        if accelerator.is_main_process:
            env = artifacts.environment(accelerator, experiment, components.splits.files, registry)
            if resume is None:
                artifacts.atomic_write(run_dir / "config.toml", experiment.to_toml())
                artifacts.write_json(run_dir / "environment.json", env)
        trainer = Trainer(experiment, components, accelerator, run_dir, reporter)
        outcome = trainer.fit(resume_from=checkpoint.latest(run_dir) if resume is not None else None)
        shipped_by = components  # what built the shipped model: the second pass's under refit_on_validation
        if training.refit_on_validation:
            from stancerun.engine.refit import refit

            outcome, shipped_by = refit(experiment, components, accelerator, reporter, outcome, registry)
        results = {"model": {"use": experiment.config["model"]["use"], "source": components.loaded.source,
                             "adapter": experiment.config["adapter"]["use"]}, **outcome["results"]}
        accelerator.wait_for_everyone()
        # Every process takes part: ZeRO-3 and FSDP hold shards that Accelerate gathers here.
        state_dict = accelerator.get_state_dict(outcome["model"])
        if accelerator.is_main_process:
            from stancerun.components.assembly import saved_info

            results.update(analyse(experiment, components, trainer, outcome, run_dir, registry, shipped_by.splits.train))
            info = {**saved_info(shipped_by, experiment), "temperature": results["calibration"]["temperature"]}
            shipped = outcome.get("shipped")
            if shipped is not None:
                info["ensemble"] = shipped.info()
            artifacts.save_model(shipped_by, accelerator.unwrap_model(outcome["model"]), state_dict, run_dir / "model", info,
                                 shipped)
            artifacts.write_json(run_dir / "results.json", results)
            summary = Summary.of(results, outcome["final"], components.splits.labels, time.perf_counter() - started)
            artifacts.atomic_write(run_dir / "report.md", markdown(summary, experiment, env))
            trainer.callback("on_train_end", results)
            reporter.final(summary, run_dir)
        else:
            trainer.callback("on_train_end", results)
    accelerator.wait_for_everyone()
    # Not accelerator.end_training(): it destroys the process group, and a sweep, repeats or a
    # learning curve run more runs in this process (the CLI destroys it on the way out).
    return run_dir


def analyse(experiment: Experiment, components, trainer, outcome, run_dir: Path, registry, shipped_train) -> dict:
    """Baselines, intervals, calibration and error analysis on the validation split; writes
    predictions.csv, misclassified.jsonl and the plots. Returns what results.json adds.
    ``shipped_train``: what the shipped model trained on (train + validation after a refit)."""
    from stancerun.evaluation import analysis
    from stancerun.evaluation import baselines
    from stancerun.reporting import plots
    from stancerun.evaluation import stats
    from stancerun.reporting.report import confusion

    ev = experiment.evaluation
    splits, names = components.splits, components.splits.labels
    validation, metric_fn = splits.validation, components.metric_fn
    pair_name = components.columns.pair or "text_pair"
    evaluated = {"validation": validation, **({"test": splits.test} if splits.test is not None else {})}
    refitted = shipped_train is not splits.train
    fitted = baselines.fit(registry, ev.baselines, splits.train, names)
    baseline_logits = baselines.score_all(fitted, {"validation": validation} if refitted else evaluated, len(names))
    if refitted:
        # The baselines the shipped model is compared with on test, and an [ensemble]'s members that ship
        # with it, train on what it trained on; validation keeps the train-only fits.
        fitted = baselines.fit(registry, ev.baselines, shipped_train, names)
        if splits.test is not None:
            baseline_logits["test"] = baselines.score_all(fitted, {"test": splits.test}, len(names))["test"]
    metric = analysis.headline_key(experiment.config, outcome["final"].metrics)
    # From here on "final" (and "test") are what the run ships: the stack when there is one.
    stacked = stack_outcome(experiment, outcome, fitted, baseline_logits, names, metric_fn, metric, registry)
    final = outcome["final"]
    labels = final.labels

    calibration = analysis.calibrate(final.logits, labels, ev.calibrate)
    scored = {"final": analysis.score(final.logits, labels, names, metric_fn, ev),
              "baseline": analysis.score(outcome["baseline"].logits, labels, names, metric_fn, ev)}
    for name, logits in baseline_logits["validation"].items():
        scored[name] = analysis.score(logits, labels, names, metric_fn, ev)

    probabilities = stats.softmax(final.logits, calibration.temperature)
    predicted = probabilities.argmax(axis=1)
    artifacts.atomic_write(run_dir / "predictions.csv", artifacts.predictions_csv(
        validation.texts, validation.pairs, labels.tolist(), predicted.tolist(), probabilities, names, pair_name))
    artifacts.atomic_write(run_dir / "misclassified.jsonl", analysis.misclassified_jsonl(
        validation.texts, validation.pairs, labels, probabilities, names, pair_name))

    added = {
        "baselines": {name: scored[name].metrics for name in baseline_logits["validation"]},
        "intervals": {name: s.intervals for name, s in scored.items() if s.intervals},
        "calibration": calibration.to_dict(),
        "analysis": {"metric": metric, "most_confused": analysis.most_confused(labels, predicted, names)},
        "data": {"distribution": components.data_report.distribution,
                 "leaks": [vars(leak) for leak in components.data_report.leaks],
                 "dropped_for_leakage": components.data_report.dropped,
                 "truncated": trainer.truncated()},
    }
    if stacked is not None:
        added["final"], added["ensemble"] = final.metrics, stacked
        if outcome["test"] is not None:
            added["test"] = outcome["test"].metrics
    strongest = analysis.strongest(scored, list(baseline_logits["validation"]), metric)
    if strongest is not None:
        added["verdict"] = {"metric": metric, "baseline": strongest, "validation": analysis.separable_from(
            scored["final"], scored[strongest], labels, names, metric_fn, metric, ev)}
    if validation.pairs is not None:
        added["analysis"]["by_group"] = analysis.by_group(validation.pairs, final.logits, labels, names, metric_fn)
    if outcome["test"] is not None:
        test = outcome["test"]
        added["intervals"]["test"] = analysis.score(test.logits, test.labels, names, metric_fn, ev).intervals
        # The baselines on the test split too: the honest comparison, untouched by model selection.
        added["test_baselines"] = {}
        for name, logits in baseline_logits["test"].items():
            scored_test = analysis.score(logits, test.labels, names, metric_fn, ev)
            added["test_baselines"][name] = scored_test.metrics
            added["intervals"][f"test_{name}"] = scored_test.intervals
        if strongest is not None:
            added["verdict"]["test"] = analysis.separable_from(
                analysis.Scored(test.logits, {}), analysis.Scored(baseline_logits["test"][strongest], {}),
                test.labels, names, metric_fn, metric, ev)
        test_cal = stats.reliability(stats.softmax(test.logits), test.labels).ece
        added["calibration"]["test_ece_before"] = test_cal
        if ev.calibrate:
            added["calibration"]["test_ece_after"] = stats.reliability(
                stats.softmax(test.logits, calibration.temperature), test.labels).ece
        if splits.test.pairs is not None:
            added["analysis"]["test_by_group"] = analysis.by_group(splits.test.pairs, test.logits, test.labels, names, metric_fn)

    if ev.plots:
        folder = run_dir / "plots"
        figures = {}
        if plots.loss_curves(trainer.history, folder / "loss.png"):
            figures["loss"] = "plots/loss.png"
        plots.confusion(confusion(final.logits, labels, len(names)), names, folder / "confusion.png")
        figures["confusion"] = "plots/confusion.png"
        curves = {"before scaling": calibration.reliability_before}
        if ev.calibrate:
            curves[f"T = {calibration.temperature:.2f}"] = calibration.reliability
        plots.reliability(curves, folder / "reliability.png")
        figures["reliability"] = "plots/reliability.png"
        added["plots"] = figures
    return added


def stack_outcome(experiment: Experiment, outcome: dict, fitted: dict, baseline_logits: dict, names, metric_fn,
                  metric: str, registry) -> dict | None:
    """Fit ``[ensemble]`` on the validation split and put the shipped scores in ``outcome``'s
    "final" and "test" (the fine-tuned model's own stay in the returned record, beside how the
    stack is made). None when the experiment ships the fine-tuned model as it is."""
    from dataclasses import replace

    from stancerun.evaluation import ensemble
    from stancerun.components.assembly import origin
    from stancerun.contracts import EvalPrediction
    from stancerun.config.schema import baseline_rows, greater_is_better

    config = experiment.ensemble
    if not config.stack and config.decision == "argmax":
        return None
    members = list(config.stack)
    final = outcome["final"]
    stack = ensemble.fit(final.logits, members, [baseline_logits["validation"][m] for m in members], final.labels, names,
                         metric_fn, metric, config.decision, greater_is_better(metric))
    tables = baseline_rows(experiment.evaluation.baselines)
    # Every option recorded, defaults included: a later version's defaults must not change a saved stack.
    records = {m: {**origin(registry, "baselines", tables[m]["use"]), "options": resolved_options(registry, "baselines", tables[m])}
               for m in members}
    outcome["shipped"] = ensemble.Shipped(stack, [fitted[m] for m in members], records)
    record = {**stack.to_dict(), "decision": config.decision, "fine_tuned": {}}
    for key, split in (("final", "validation"), ("test", "test")):
        evaluation = outcome.get(key)
        if evaluation is None:
            continue
        scores = stack.combine(evaluation.logits, [baseline_logits[split][m] for m in members])
        loss = float(-ensemble.log_softmax(scores)[np.arange(len(evaluation.labels)), evaluation.labels].mean())
        record["fine_tuned"][split] = evaluation.metrics
        outcome[key] = replace(evaluation, logits=scores,
                               metrics={"loss": loss, **metric_fn(EvalPrediction(scores, evaluation.labels, names))})
    return record


def resolved_options(registry, kind: str, table: dict) -> dict:
    """A component table's options with the factory's defaults filled in."""
    import inspect

    from stancerun.config.experiment import options_schema
    from stancerun.options import to_plain

    schema, _ = options_schema(registry.get(kind, table["use"]).factory)
    defaults = {k: to_plain(default) for k, (_, default) in schema.items() if default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in table.items() if k != "use"}}


def resume_run(run_dir: Path, registry=None) -> Path:
    """Continue an interrupted run from its newest complete checkpoint, with its own resolved config."""
    if not (run_dir / "config.toml").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no config.toml)")
    if (run_dir / "results.json").is_file():
        raise UsageError(f"{run_dir}: this run finished; nothing to resume")
    latest = checkpoint.latest(run_dir)
    status = artifacts.read_status(run_dir) or {}
    failed = f"failed at step {status.get('step')}: {status.get('error')}" if status.get("status") == "failed" else None
    if latest is None:
        raise UsageError(f"{run_dir}: no complete checkpoint to resume from (save_strategy may be \"no\")"
                         + (f"; the run {failed}" if failed else ""))
    if failed:
        from rich.console import Console

        # Said before trying again: the same error will probably come back unless its cause changed.
        Console(stderr=True).print(f"[bold yellow]note:[/] this run {failed} (traceback in {run_dir / artifacts.STATUS}); "
                                   f"resuming from {latest.name}")
    experiment = Experiment(run_dir / "config.toml", tomlio.loads((run_dir / "config.toml").read_text(encoding="utf-8")))
    return run_experiment(experiment, registry=registry, resume=run_dir)
