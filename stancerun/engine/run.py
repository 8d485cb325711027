"""One run, start to finish: accelerator, components, training, analysis, run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stancerun.rundir import artifacts
from stancerun.rundir.layout import CONFIG, PLOTS, RunDir
from stancerun.rundir.results import (AnalysisFigures, CalibrationFigures, Confused, DataFigures, EnsembleFigures,
                                      FineTuned, LeakFigures, ModelUsed, PlotFiles, Results, Verdict)
from stancerun.engine import checkpoint
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
    from accelerate.utils import set_seed

    from stancerun.components.assembly import build_components
    from stancerun.engine.trainer import Trainer
    from stancerun.registry.discovery import get_registry

    started = time.perf_counter()
    registry = registry or get_registry()
    accelerator = make_accelerator(experiment.training)
    reporter = Reporter(accelerator.is_main_process and not quiet)
    set_seed(experiment.config["seed"])  # before the head is initialised
    components = build_components(experiment, registry, splits)
    components.callbacks.extend(callbacks)
    run_dir = resume if dry_run or resume is not None else name_run_dir(experiment, accelerator, output_dir)
    reporter.header(experiment, components, accelerator, run_dir)
    reporter.data(components.data_report)
    if dry_run:
        show_plan(experiment, components, accelerator, reporter)
        return None

    trainer = None
    # Until the trainer has loaded its checkpoint, a resumed run stands where its status said it stood.
    before = (artifacts.read_status(resume) or {}).get("step", 0) if resume is not None else 0
    with artifacts.run_status(run_dir, accelerator.is_main_process,
                              lambda: trainer.run.global_step if trainer and trainer.run.global_step else before):
        env = None
        if accelerator.is_main_process:
            env = write_start(experiment, components, accelerator, run_dir, registry, resumed=resume is not None)
        trainer = Trainer(experiment, components, accelerator, run_dir, reporter)
        outcome, shipped_by = train(experiment, components, accelerator, reporter, trainer, resume, registry)
        finish(experiment, components, accelerator, reporter, trainer, outcome, shipped_by, registry,
               Started(run_dir, env, started))
    accelerator.wait_for_everyone()
    # Not accelerator.end_training(): it destroys the process group, and a sweep, repeats or a
    # learning curve run more runs in this process (the CLI destroys it on the way out).
    return run_dir


def name_run_dir(experiment: Experiment, accelerator, output_dir: str | None) -> Path:
    """A new run directory; the main process names it and every process uses that name."""
    from accelerate.utils import broadcast_object_list

    holder = [str(artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir))
              if accelerator.is_main_process else None]
    return Path(broadcast_object_list(holder)[0])


def show_plan(experiment: Experiment, components, accelerator, reporter) -> None:
    """A dry run: what would train, for how many steps; nothing is trained or written."""
    from stancerun.engine.trainer import Trainer, plan_steps

    training = experiment.training
    trainer = Trainer(experiment, components, accelerator, None, reporter)
    train_loader, _ = trainer.loaders()
    _, total, epochs = plan_steps(len(train_loader), training, accelerator.num_processes)
    reporter.plan(trainer, total, epochs)
    if training.refit_on_validation:
        reporter.console.print("then trained anew on train + validation for the chosen model's epochs "
                               "(refit_on_validation)")
    reporter.console.print("[bold yellow]dry run:[/] nothing was trained or written")


def write_start(experiment: Experiment, components, accelerator, run_dir: Path, registry, resumed: bool) -> dict:
    """The environment (returned), and for a new run config.toml and environment.json."""
    env = artifacts.environment(accelerator, experiment, components.splits.files, registry)
    if not resumed:
        artifacts.atomic_write(RunDir(run_dir).config, experiment.to_toml())
        artifacts.write_json(RunDir(run_dir).environment, env)
    return env


def train(experiment: Experiment, components, accelerator, reporter, trainer, resume: Path | None, registry):
    """(the outcome that ships, the components that built its model): the second pass's under
    refit_on_validation, else the first's."""
    outcome = trainer.fit(resume_from=checkpoint.latest(resume) if resume is not None else None)
    if not experiment.training.refit_on_validation:
        return outcome, components
    from stancerun.engine.refit import refit

    return refit(experiment, components, accelerator, reporter, outcome, registry)


@dataclass
class Started:
    """Where a run writes, the environment it recorded, and when it started (for its wall time)."""

    run_dir: Path
    environment: dict | None
    at: float


def finish(experiment: Experiment, components, accelerator, reporter, trainer, outcome, shipped_by, registry,
           started: Started) -> None:
    """Gather the weights on every process; on the main one analyse, save the model and write
    results.json and report.md. Every process calls the callbacks' on_train_end."""
    used = ModelUsed(experiment.config["model"]["use"], components.loaded.source, experiment.config["adapter"]["use"])
    accelerator.wait_for_everyone()
    # Every process takes part: ZeRO-3 and FSDP hold shards that Accelerate gathers here.
    state_dict = accelerator.get_state_dict(outcome.model)
    if not accelerator.is_main_process:
        trainer.callback("on_train_end", outcome.results(used).to_json())
        return
    run_dir = RunDir(started.run_dir)
    outcome, results = analyse(experiment, components, trainer, outcome, run_dir.path, registry, shipped_by.splits.train,
                               used)
    save_shipped(experiment, accelerator, outcome, shipped_by, state_dict, run_dir.model, results)
    artifacts.write_json(run_dir.results, results.to_json())
    summary = Summary.of(results, outcome.final, components.splits.labels, time.perf_counter() - started.at)
    artifacts.atomic_write(run_dir.report, markdown(summary, experiment, started.environment))
    trainer.callback("on_train_end", results.to_json())
    reporter.final(summary, run_dir.path)


def save_shipped(experiment: Experiment, accelerator, outcome, shipped_by, state_dict, model_dir: Path,
                 results: Results) -> None:
    """model/: the shipped weights, its stack's members, and stancerun.json (calibration included)."""
    from stancerun.components.assembly import saved_info

    info = {**saved_info(shipped_by, experiment), "temperature": results.calibration.temperature}
    if outcome.shipped is not None:
        info["ensemble"] = outcome.shipped.info()
    artifacts.save_model(shipped_by, accelerator.unwrap_model(outcome.model), state_dict, model_dir, info,
                         outcome.shipped)


def analyse(experiment: Experiment, components, trainer, outcome, run_dir: Path, registry, shipped_train,
            used: ModelUsed) -> tuple:
    """Baselines, intervals, calibration and error analysis on the validation split; writes
    predictions.csv, misclassified.jsonl and the plots. Returns (the outcome that ships: the
    stack's scores when ``[ensemble]`` stacks, the run's results).
    ``shipped_train``: what the shipped model trained on (train + validation after a refit)."""
    from stancerun.evaluation import analysis

    ev, names, metric_fn = experiment.evaluation, components.splits.labels, components.metric_fn
    fitted, baseline_logits = score_baselines(experiment, components, registry, shipped_train)
    metric = analysis.headline_key(experiment.config, outcome.final.metrics)
    # From here on the outcome's "final" (and "test") are what the run ships: the stack when there is one.
    outcome, stacked = stack_outcome(experiment, outcome, fitted, baseline_logits, names, metric_fn, metric, registry)
    final, labels = outcome.final, outcome.final.labels
    calibration = analysis.calibrate(final.logits, labels, ev.calibrate)
    scored = {"final": analysis.score(final.logits, labels, names, metric_fn, ev),
              "baseline": analysis.score(outcome.baseline.logits, labels, names, metric_fn, ev)}
    for name, logits in baseline_logits["validation"].items():
        scored[name] = analysis.score(logits, labels, names, metric_fn, ev)
    predicted = write_predictions(run_dir, components, final, calibration.temperature)

    results = outcome.results(used)
    results.baselines = {name: scored[name].metrics for name in baseline_logits["validation"]}
    results.intervals = {name: s.intervals for name, s in scored.items() if s.intervals}
    results.calibration = CalibrationFigures(calibration.temperature, calibration.ece_before, calibration.ece_after)
    results.analysis = AnalysisFigures(metric, [Confused.from_json(m) for m in analysis.most_confused(labels, predicted, names)])
    results.data = data_figures(components.data_report, trainer.truncated())
    results.ensemble = stacked
    strongest = analysis.strongest(scored, list(baseline_logits["validation"]), metric)
    if strongest is not None:
        results.verdict = Verdict(metric, strongest, {"validation": analysis.separable_from(
            scored["final"], scored[strongest], labels, names, metric_fn, metric, ev)})
    if components.splits.validation.pairs is not None:
        results.analysis.by_group = analysis.by_group(components.splits.validation.pairs, final.logits, labels, names,
                                                      metric_fn)
    if outcome.test is not None:
        add_test_figures(results, experiment, components, outcome.test, baseline_logits["test"], calibration.temperature)
    if ev.plots:
        results.plots = draw_plots(RunDir(run_dir), trainer.history, final, calibration, names, ev.calibrate)
    return outcome, results


def score_baselines(experiment: Experiment, components, registry, shipped_train) -> tuple[dict, dict]:
    """(the fitted baselines that ship with a stack, split -> baseline name -> logits)."""
    from stancerun.evaluation import baselines

    ev, splits, names = experiment.evaluation, components.splits, components.splits.labels
    evaluated = {"validation": splits.validation, **({"test": splits.test} if splits.test is not None else {})}
    refitted = shipped_train is not splits.train
    fitted = baselines.fit(registry, ev.baselines, splits.train, names)
    logits = baselines.score_all(fitted, {"validation": splits.validation} if refitted else evaluated, len(names))
    if refitted:
        # The baselines the shipped model is compared with on test, and an [ensemble]'s members that ship
        # with it, train on what it trained on; validation keeps the train-only fits.
        fitted = baselines.fit(registry, ev.baselines, shipped_train, names)
        if splits.test is not None:
            logits["test"] = baselines.score_all(fitted, {"test": splits.test}, len(names))["test"]
    return fitted, logits


def write_predictions(run_dir: Path, components, final, temperature: float) -> np.ndarray:
    """predictions.csv and misclassified.jsonl for the validation split; returns the predicted labels."""
    from stancerun.evaluation import analysis, stats

    validation, names = components.splits.validation, components.splits.labels
    pair_name = components.columns.pair or "text_pair"
    probabilities = stats.softmax(final.logits, temperature)
    predicted = probabilities.argmax(axis=1)
    artifacts.atomic_write(RunDir(run_dir).predictions, artifacts.predictions_csv(
        validation.texts, validation.pairs, final.labels.tolist(), predicted.tolist(), probabilities, names, pair_name))
    artifacts.atomic_write(RunDir(run_dir).misclassified, analysis.misclassified_jsonl(
        validation.texts, validation.pairs, final.labels, probabilities, names, pair_name))
    return predicted


def data_figures(report, truncated: dict) -> DataFigures:
    return DataFigures(report.distribution, [LeakFigures.from_json(vars(leak)) for leak in report.leaks], report.dropped,
                       truncated)


def add_test_figures(results: Results, experiment: Experiment, components, test, baseline_logits: dict,
                     temperature: float) -> None:
    """The shipped model and the baselines on the test split: intervals, the verdict's test
    difference, calibration and per-group figures."""
    from stancerun.evaluation import analysis, stats

    ev, names, metric_fn = experiment.evaluation, components.splits.labels, components.metric_fn
    results.intervals["test"] = analysis.score(test.logits, test.labels, names, metric_fn, ev).intervals
    # The baselines on the test split too: the honest comparison, untouched by model selection.
    results.test_baselines = {}
    for name, logits in baseline_logits.items():
        scored_test = analysis.score(logits, test.labels, names, metric_fn, ev)
        results.test_baselines[name] = scored_test.metrics
        results.intervals[f"test_{name}"] = scored_test.intervals
    if results.verdict is not None:
        verdict = results.verdict
        verdict.differences["test"] = analysis.separable_from(
            analysis.Scored(test.logits, {}), analysis.Scored(baseline_logits[verdict.baseline], {}),
            test.labels, names, metric_fn, verdict.metric, ev)
    results.calibration.test_ece_before = stats.reliability(stats.softmax(test.logits), test.labels).ece
    if ev.calibrate:
        results.calibration.test_ece_after = stats.reliability(stats.softmax(test.logits, temperature), test.labels).ece
    if components.splits.test.pairs is not None:
        results.analysis.test_by_group = analysis.by_group(components.splits.test.pairs, test.logits, test.labels, names,
                                                           metric_fn)


def draw_plots(run_dir: RunDir, history, final, calibration, names, calibrated: bool) -> PlotFiles:
    """plots/: the loss curves (when there is a history), the confusion matrix, the reliability diagram."""
    from stancerun.reporting import plots
    from stancerun.reporting.report import confusion

    figures = PlotFiles()
    if plots.loss_curves(history, run_dir.plots / "loss.png"):
        figures.loss = f"{PLOTS}/loss.png"
    plots.confusion(confusion(final.logits, final.labels, len(names)), names, run_dir.plots / "confusion.png")
    figures.confusion = f"{PLOTS}/confusion.png"
    curves = {"before scaling": calibration.reliability_before}
    if calibrated:
        curves[f"T = {calibration.temperature:.2f}"] = calibration.reliability
    plots.reliability(curves, run_dir.plots / "reliability.png")
    figures.reliability = f"{PLOTS}/reliability.png"
    return figures


def stack_outcome(experiment: Experiment, outcome, fitted: dict, baseline_logits: dict, names, metric_fn,
                  metric: str, registry) -> tuple:
    """Fit ``[ensemble]`` on the validation split; returns (the outcome that ships: the stack's
    scores as its "final" and "test", the stack in ``shipped``; results.json's "ensemble": how
    the stack is made and the fine-tuned model's own metrics). (``outcome``, None) when the
    experiment ships the fine-tuned model as it is."""
    from dataclasses import replace

    from stancerun.evaluation import ensemble
    from stancerun.components.assembly import origin
    from stancerun.contracts import EvalPrediction
    from stancerun.config.schema import baseline_rows, greater_is_better

    config = experiment.ensemble
    if not config.stack and config.decision == "argmax":
        return outcome, None
    members = list(config.stack)
    final = outcome.final
    stack = ensemble.fit(final.logits, members, [baseline_logits["validation"][m] for m in members], final.labels, names,
                         metric_fn, metric, config.decision, greater_is_better(metric))
    tables = baseline_rows(experiment.evaluation.baselines)
    # Every option recorded, defaults included: a later version's defaults must not change a saved stack.
    records = {m: {**origin(registry, "baselines", tables[m]["use"]), "options": resolved_options(registry, "baselines", tables[m])}
               for m in members}

    def shipped_scores(evaluation, split: str):
        scores = stack.combine(evaluation.logits, [baseline_logits[split][m] for m in members])
        loss = float(-ensemble.log_softmax(scores)[np.arange(len(evaluation.labels)), evaluation.labels].mean())
        return replace(evaluation, logits=scores, metrics={"loss": loss, **metric_fn(EvalPrediction(scores, evaluation.labels, names))})

    test = outcome.test
    fine_tuned = FineTuned(final.metrics, test.metrics if test is not None else None)
    figures = EnsembleFigures(**stack.to_dict(), decision=config.decision, fine_tuned=fine_tuned)
    shipped = replace(outcome, final=shipped_scores(final, "validation"),
                      test=shipped_scores(test, "test") if test is not None else None,
                      shipped=ensemble.Shipped(stack, [fitted[m] for m in members], records))
    return shipped, figures


def resolved_options(registry, kind: str, table: dict) -> dict:
    """A component table's options with the factory's defaults filled in."""
    import inspect

    from stancerun.config.experiment import options_schema
    from stancerun.options import to_plain

    schema, _ = options_schema(registry.get(kind, table["use"]).factory)
    defaults = {k: to_plain(default) for k, (_, default) in schema.items() if default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in table.items() if k != "use"}}


def nothing_to_resume(found: RunDir, status: dict) -> str:
    """Why a run without a complete checkpoint cannot continue, from what status.json says became of it."""
    step = status.get("step")
    if found.read_config().get("training", {}).get("save_strategy") == "no":
        cause = "it saves no checkpoints (save_strategy = \"no\")"
    elif status.get("status") == "interrupted":
        cause = f"interrupted at step {step}, before its first checkpoint"
    elif status.get("status") == "failed":
        cause = f"failed at step {step} ({status.get('error')}), before its first checkpoint"
    else:  # "running": killed outright (SIGKILL, power) before its first checkpoint, or still running
        cause = "no complete checkpoint yet (killed outright before its first, or still running)"
    return f"{cause}: nothing to resume; run the experiment again"


def resume_run(run_dir: Path, registry=None, trust_remote_code: bool = False) -> Path:
    """Continue an interrupted run from its newest complete checkpoint, with its own resolved config;
    a config that lets the model run code from its folder needs ``trust_remote_code`` too."""
    found = RunDir(run_dir)
    if not found.config.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no {CONFIG})")
    if found.results.is_file():
        raise UsageError(f"{run_dir}: this run finished; nothing to resume")
    latest, broken = checkpoint.newest_intact(run_dir)
    if broken:  # checked before anything is written: status.json keeps saying where the run really stopped
        from rich.console import Console
        from rich.markup import escape

        if latest is None:
            raise UsageError(f"{run_dir}: no intact checkpoint to resume from: " + "; ".join(broken))
        for problem in broken:  # one unwrapped line each: the path stays whole
            Console(stderr=True, soft_wrap=True).print(f"[bold yellow]warning:[/] skipping a damaged checkpoint: "
                                                       f"{escape(problem)}")
    status = artifacts.read_status(run_dir) or {}
    failed = f"failed at step {status.get('step')}: {status.get('error')}" if status.get("status") == "failed" else None
    if latest is None:
        raise UsageError(f"{run_dir}: {nothing_to_resume(found, status)}")
    if failed:
        from rich.console import Console

        # Said before trying again: the same error will probably come back unless its cause changed.
        Console(stderr=True).print(f"[bold yellow]note:[/] this run {failed} (traceback in {found.status}); "
                                   f"resuming from {latest.name}")
    config = found.read_config()
    asking = artifacts.asking_for_remote_code(config)
    if asking and not trust_remote_code:
        raise UsageError(f"{found.config}: [{', '.join(asking)}] trust_remote_code asks to run code from the model's "
                         "folder; add --trust-remote-code to allow it if you trust where it came from")
    experiment = Experiment(found.config, config)
    return run_experiment(experiment, registry=registry, resume=run_dir)
