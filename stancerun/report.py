"""What a person reads: the rich console report during a run, and report.md after it.

Only the main process prints; other processes get a quiet console.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def per_class(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    predicted = logits.argmax(axis=1)
    rows = []
    for i, name in enumerate(names):
        tp = int(((predicted == i) & (labels == i)).sum())
        pred_n, true_n = int((predicted == i).sum()), int((labels == i).sum())
        p = tp / pred_n if pred_n else 0.0
        r = tp / true_n if true_n else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"label": name, "precision": p, "recall": r, "f1": f, "support": true_n})
    return rows


def confusion(logits: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, logits.argmax(axis=1)), 1)
    return matrix


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


#: Below this many evaluation examples, say plainly that the scores are mostly noise.
SMALL_EVAL = 30


def small_eval_warning(n: int) -> str | None:
    if n >= SMALL_EVAL:
        return None
    return (f"only {n} evaluation example(s): one example moves accuracy by {100 / max(n, 1):.0f} points, "
            "so these scores cannot tell learning from luck")


@dataclass
class Summary:
    """The end-of-run figures, shared by the console and report.md."""

    results: dict
    per_class: list[dict]
    confusion: np.ndarray
    labels: list[str]
    mean_confidence: float
    mean_confidence_correct: float
    mean_confidence_wrong: float
    wall_time_s: float

    @classmethod
    def of(cls, results, final, labels, wall_time_s):
        probs = softmax(final.logits)
        correct = probs.argmax(axis=1) == final.labels
        conf = probs.max(axis=1)
        return cls(results, per_class(final.logits, final.labels, labels), confusion(final.logits, final.labels, len(labels)),
                   labels, float(conf.mean()), float(conf[correct].mean()) if correct.any() else float("nan"),
                   float(conf[~correct].mean()) if (~correct).any() else float("nan"), wall_time_s)

    def comparison_rows(self):
        base, final = self.results["baseline"], self.results["final"]
        for key in final:
            if key in base:
                yield key, base[key], final[key], final[key] - base[key]


class NullProgress:
    def update(self, step, logs=None):
        pass

    def close(self):
        pass


class LiveProgress:
    def __init__(self, console: Console, total: int):
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.task = self.progress.add_task("train", total=total, info="")
        self.progress.start()

    def update(self, step, logs=None):
        fields = {"info": f"loss {logs['loss']:.4f}  lr {logs['learning_rate']:.2e}"} if logs else {}
        self.progress.update(self.task, completed=step, **fields)

    def close(self):
        self.progress.stop()


class Reporter:
    def __init__(self, is_main_process: bool = True, console: Console | None = None):
        self.console = console or Console(quiet=not is_main_process)

    def header(self, experiment, components, accelerator, run_dir) -> None:
        from stancerun.engine import count_parameters

        trainable, total = count_parameters(components.model)
        splits = components.splits
        table = Table.grid(padding=(0, 2))
        rows = [
            ("experiment", experiment.name + (f" — {experiment.config.get('description')}" if experiment.config.get("description") else "")),
            ("model", f"{experiment.config['model']['name']} ({components.loaded.source})"),
            ("adapter", experiment.config["adapter"]["use"]),
            ("trainable", f"{trainable:,} / {total:,} parameters ({100 * trainable / total:.2f}%)"),
            ("new head layers", ", ".join(components.loaded.new_modules) or "none"),
            ("labels", ", ".join(splits.labels)),
            ("data", f"train {len(splits.train)}, validation {len(splits.validation)}"
                     + (" (carved from train)" if splits.validation_from_split else "")
                     + (f", test {len(splits.test)}" if splits.test is not None else "")),
            ("device", f"{accelerator.device} × {accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}"),
        ]
        if run_dir is not None:
            rows.append(("run directory", str(run_dir)))
        for key, value in rows:
            table.add_row(f"[bold cyan]{key}", value)
        self.console.rule("[bold]stancerun")
        self.console.print(table)

    def plan(self, trainer, total_steps: int, epochs: int) -> None:
        t = trainer.training
        self.console.print(f"[dim]plan: {total_steps} optimizer steps over {epochs} epoch(s), batch {t.per_device_train_batch_size}"
                           f" × {trainer.accelerator.num_processes} process(es) × {t.gradient_accumulation_steps} accumulation,"
                           f" lr {t.learning_rate:g} ({t.lr_scheduler_type}), eval {t.eval_strategy}[/]")

    def evaluation(self, title: str, metrics: dict, best: str | None = None) -> None:
        """One table per evaluation; the metric that picks the best model in bold."""
        self.console.print(f"[bold]evaluation[/] · {title}")
        table = Table(show_header=False, box=None, padding=(0, 2))
        for key, value in metrics.items():
            table.add_row(f"[bold]{key}[/]" if key == best else key, fmt(value))
        self.console.print(table)

    def progress(self, total: int):
        if self.console.quiet:
            return NullProgress()
        return LiveProgress(self.console, total)

    def final(self, summary: Summary, run_dir) -> None:
        c = self.console
        c.rule("[bold]results")
        table = Table(title="before vs after training (validation split)", title_justify="left")
        for col in ("metric", "before", "after", "delta"):
            table.add_column(col, justify="right" if col != "metric" else "left")
        for key, before, after, delta in summary.comparison_rows():
            color = "green" if (delta > 0) != (key in ("loss", "mse", "mae")) else "red"
            table.add_row(key, fmt(before), fmt(after), f"[{color}]{delta:+.4f}[/]")
        c.print(table)
        table = Table(title="per class (final model)", title_justify="left")
        for col in ("label", "precision", "recall", "f1", "support"):
            table.add_column(col, justify="right" if col != "label" else "left")
        for row in summary.per_class:
            table.add_row(row["label"], *(fmt(row[k]) for k in ("precision", "recall", "f1")), str(row["support"]))
        c.print(table)
        table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
        table.add_column("")
        for name in summary.labels:
            table.add_column(name, justify="right")
        for name, row in zip(summary.labels, summary.confusion):
            table.add_row(name, *(str(v) for v in row))
        c.print(table)
        if "test" in summary.results:
            self.evaluation("test split (final model)", summary.results["test"])
        train = summary.results["train"]
        if warning := small_eval_warning(train["eval_samples"]):
            c.print(f"[bold yellow]warning:[/] {warning}")
        c.print(f"mean confidence {summary.mean_confidence:.3f} (correct {summary.mean_confidence_correct:.3f}, "
                f"wrong {summary.mean_confidence_wrong:.3f})")
        c.print(f"trained {train['global_step']} steps in {train['runtime_s']:.1f}s ({train['samples_per_second']:.1f} samples/s)"
                + (", stopped early" if train["stopped_early"] else "")
                + (f"; best step {train['best_step']} restored" if train["restored_best"] else "")
                + f"; wall time {summary.wall_time_s:.1f}s")
        if run_dir is not None:
            c.print(f"[bold green]run directory:[/] {run_dir}")


def markdown(summary: Summary, experiment, environment: dict) -> str:
    """report.md: the same figures as the console, as a document to keep with the run."""
    r = summary.results
    lines = [f"# {experiment.name}", ""]
    if experiment.config.get("description"):
        lines += [experiment.config["description"], ""]
    model, adapter = experiment.config["model"], experiment.config["adapter"]
    train = r["train"]
    lines += [
        f"- model: `{model['name']}`, adapter: `{adapter['use']}`",
        f"- device: {environment.get('device')} × {environment.get('world_size')} process(es)",
        f"- training: {train['global_step']} steps, {train['epochs']} epochs, {train['runtime_s']:.1f}s, "
        f"{train['samples_per_second']} samples/s" + (" (stopped early)" if train["stopped_early"] else ""),
        f"- best model: step {train['best_step']} by {train['metric_for_best_model']} = {fmt(train['best_metric'])}"
        + (" (restored)" if train["restored_best"] else ""),
        f"- evaluation split: {train['eval_samples']} examples",
        "",
    ]
    if warning := small_eval_warning(train["eval_samples"]):
        lines += [f"> **Warning:** {warning}.", ""]
    lines += [
        "## Before vs after training", "",
        "| metric | before | after | delta |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {k} | {fmt(b)} | {fmt(a)} | {d:+.4f} |" for k, b, a, d in summary.comparison_rows()]
    lines += ["", "## Per class (final model)", "", "| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {row['label']} | {fmt(row['precision'])} | {fmt(row['recall'])} | {fmt(row['f1'])} | {row['support']} |"
              for row in summary.per_class]
    lines += ["", "## Confusion matrix", "", "rows: true label, columns: prediction", "",
              "| | " + " | ".join(summary.labels) + " |", "|---|" + "---:|" * len(summary.labels)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(summary.labels, summary.confusion)]
    if "test" in r:
        lines += ["", "## Test split (final model)", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in r["test"].items()]
    lines += ["", "## Confidence", "",
              f"mean {summary.mean_confidence:.3f}; on correct predictions {summary.mean_confidence_correct:.3f}, "
              f"on wrong ones {summary.mean_confidence_wrong:.3f}.", "",
              "Files: `config.toml` (the resolved experiment), `environment.json`, `metrics.jsonl`, `results.json`, "
              "`predictions.csv`, `model/`, `checkpoints/`.", ""]
    return "\n".join(lines)
