"""`stancerun evaluate RUN_DIR --data FILE`: score a saved model on new labelled data, with the
same intervals, calibration and error analysis as a run's own report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from stancerun.evaluation import analysis
from stancerun.rundir import artifacts
from stancerun.rundir.layout import CONFIG, MISCLASSIFIED, MODEL, PREDICTIONS, REPORT, RESULTS, RunDir
from stancerun.evaluation import stats
from stancerun.errors import UsageError


def read_labelled(path: Path, info: dict, model_dir: Path, registry):
    """Examples from a new labelled file, read by the run's own dataset plugin (its ``read``)."""
    from stancerun.components.assembly import rebuild, saved_record

    if not path.is_file():
        raise UsageError(f"--data {path}: file not found")
    record = saved_record(info, "data", model_dir)
    # Built again only to read with: the run's own training files need not exist any more.
    dataset = rebuild(registry, "datasets", record, files_must_exist=False)
    if not callable(getattr(dataset, "read", None)):
        raise UsageError(f"--data: dataset '{record['use']}' (plugin '{record['plugin']}') cannot read files: "
                         "it has no read(path, labels) (see stancerun.Dataset)")
    return dataset.read(str(path), info["labels"])


def evaluate_run(run_dir: Path, data: Path, batch_size: int = 64, registry=None,
                 trust_remote_code: bool = False) -> Path:
    from rich.console import Console

    from stancerun.components.assembly import combined_metrics
    from stancerun.config.experiment import Experiment, build
    from stancerun.registry.discovery import get_registry
    from stancerun.inference.predict import inference_device, shipped_logits
    from stancerun.reporting.report import Reporter, per_class

    registry = registry or get_registry()
    found = RunDir(run_dir)
    if not found.model.is_dir() or not found.config.is_file():
        raise UsageError(f"{run_dir}: not a run directory (needs {MODEL}/ and {CONFIG})")
    config = found.read_config()
    experiment = Experiment(found.config, config)
    info = artifacts.check_saved_model(found.model, trust_remote_code)
    examples = read_labelled(data, info, found.model, registry)  # bad data fails before the load
    saved = artifacts.load_model(found.model, device=inference_device(), registry=registry,
                                 trust_remote_code=trust_remote_code)
    metric_fn = combined_metrics([build(registry, "metrics", table) for table in config["metrics"]])
    names = info["labels"]
    logits = shipped_logits(saved, examples.texts, examples.pairs, batch_size)
    labels = np.asarray(examples.labels)
    scored = analysis.score(logits, labels, names, metric_fn, experiment.evaluation)
    temperature = info.get("temperature", 1.0)
    probabilities = stats.softmax(logits, temperature)
    predicted = probabilities.argmax(axis=1)
    pair_name = info.get("text_pair_column") or "text_pair"
    results = {
        "data": str(data.resolve()), "sha256": artifacts.sha256(str(data)), "examples": len(examples),
        "metrics": scored.metrics, "intervals": scored.intervals,
        "calibration": {"temperature": temperature, "ece": stats.reliability(probabilities, labels).ece},
        "per_class": per_class(logits, labels, names),
        "most_confused": analysis.most_confused(labels, predicted, names),
    }
    if examples.pairs is not None:
        results["by_group"] = analysis.by_group(examples.pairs, logits, labels, names, metric_fn)

    out = found.evaluations / f"{data.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=False)
    artifacts.write_json(out / RESULTS, results)
    artifacts.atomic_write(out / PREDICTIONS, artifacts.predictions_csv(
        examples.texts, examples.pairs, examples.labels, predicted.tolist(), probabilities, names, pair_name))
    artifacts.atomic_write(out / MISCLASSIFIED, analysis.misclassified_jsonl(
        examples.texts, examples.pairs, labels, probabilities, names, pair_name))
    artifacts.atomic_write(out / REPORT, markdown(run_dir, data, results))
    print_report(Reporter(console=Console()), results, out)
    return out


def markdown(run_dir: Path, data: Path, r: dict) -> str:
    from stancerun.reporting.report import fmt, with_interval

    lines = [f"# Evaluation of {run_dir.name} on {data.name}", "", f"{r['examples']} examples; sha256 `{r['sha256']}`.", "",
             "| metric | value [95% interval] |", "|---|---:|"]
    lines += [f"| {k} | {with_interval(v, r['intervals'].get(k))} |" for k, v in r["metrics"].items()]
    lines += ["", "| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {p['label']} | {fmt(p['precision'])} | {fmt(p['recall'])} | {fmt(p['f1'])} | {p['support']} |"
              for p in r["per_class"]]
    lines += ["", f"Expected calibration error: {r['calibration']['ece']:.4f} (temperature {r['calibration']['temperature']:.3f})."]
    if r.get("by_group"):
        columns = list(next(iter(r["by_group"].values())))
        lines += ["", "| group | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {g} | " + " | ".join(fmt(v[c]) for c in columns) + " |" for g, v in r["by_group"].items()]
    return "\n".join(lines) + "\n"


def print_report(reporter, r: dict, out: Path) -> None:
    from stancerun.reporting.report import with_interval

    c = reporter.console
    c.rule(f"[bold]evaluation: {r['examples']} examples")
    for key, value in r["metrics"].items():
        c.print(f"  {key:<20} {with_interval(value, r['intervals'].get(key))}")
    c.print(f"  ECE {r['calibration']['ece']:.4f}")
    if r["most_confused"]:
        c.print("most confused: " + "; ".join(f"{m['label']} → {m['predicted']} ×{m['count']}" for m in r["most_confused"][:3]))
    c.print(f"[bold green]written to:[/] {out}")
