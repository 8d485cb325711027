"""What a person reads: the rich console report during a run, and report.md after it.

Only the main process prints; other processes get a quiet console.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stancerun.config.schema import greater_is_better
from stancerun.evaluation.stats import per_class_scores, softmax
from stancerun.rundir import layout
from stancerun.rundir.results import PlotFiles, Results


def per_class(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where undefined)."""
    scores = per_class_scores(confusion(logits, labels, len(names)))
    return [{"label": name, **{k: float(scores[k][i]) for k in ("precision", "recall", "f1")},
             "support": int(scores["support"][i])} for i, name in enumerate(names)]


def confusion(logits: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, logits.argmax(axis=1)), 1)
    return matrix


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def with_interval(value: float, interval: dict | None) -> str:
    if not interval:
        return fmt(value)
    return f"{value:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


#: Below this many evaluation examples, say plainly that the scores are mostly noise.
SMALL_EVAL = 30


def small_eval_warning(n: int) -> str | None:
    if n >= SMALL_EVAL:
        return None
    return (f"only {n} evaluation example(s): one example moves accuracy by {100 / max(n, 1):.0f} points, "
            f"so these scores cannot tell learning from luck ({n} example(s) decide nothing). What a method does "
            "with few labels is measured by a learning curve over many draws (evaluation.learning_curve): "
            "`stancerun experiments/fewshot_curve.toml` runs one on the demo data (figures in docs/results.md)")


@dataclass
class Summary:
    """The end-of-run figures, shared by the console and report.md."""

    results: Results
    per_class: list[dict]
    confusion: np.ndarray
    labels: list[str]
    mean_confidence: float
    mean_confidence_correct: float
    mean_confidence_wrong: float
    wall_time_s: float

    @classmethod
    def of(cls, results: Results, final, labels, wall_time_s):
        temperature = results.calibration.temperature if results.calibration else 1.0
        probs = softmax(final.logits, temperature)
        correct = probs.argmax(axis=1) == final.labels
        conf = probs.max(axis=1)
        return cls(results, per_class(final.logits, final.labels, labels), confusion(final.logits, final.labels, len(labels)),
                   labels, float(conf.mean()), float(conf[correct].mean()) if correct.any() else float("nan"),
                   float(conf[~correct].mean()) if (~correct).any() else float("nan"), wall_time_s)

    def leaderboard(self) -> list[tuple[str, dict, dict]]:
        """(row name, metrics, intervals) for the fine-tuned model, the untrained model and each baseline."""
        r = self.results
        rows = [(self.shipped_name, r.final, r.row_intervals("final"))]
        if r.ensemble:
            rows.append(("fine-tuned alone", r.ensemble.fine_tuned.validation, {}))
        rows.append(("untrained", r.baseline, r.row_intervals("baseline")))
        rows += [(name, metrics, r.row_intervals(name)) for name, metrics in (r.baselines or {}).items()]
        return rows

    @property
    def shipped_name(self) -> str:
        return "shipped (stack)" if self.results.ensemble else "fine-tuned"

    def test_rows(self) -> list[tuple[str, dict, dict]]:
        """(row name, metrics, intervals) on the test split, like :meth:`leaderboard`."""
        r = self.results
        rows = [(self.shipped_name, r.test, r.row_intervals("test"))]
        if r.ensemble and r.ensemble.fine_tuned.test is not None:
            rows.append(("fine-tuned alone", r.ensemble.fine_tuned.test, {}))
        return rows + [(name, m, r.row_intervals(f"test_{name}")) for name, m in (r.test_baselines or {}).items()]

    def composition(self) -> str | None:
        """What the shipped model is made of, when it is more than the fine-tuned model."""
        e = self.results.ensemble
        if not e:
            return None
        terms = [f"{e.weights[0]:.3f} × log-softmax(fine-tuned model)"]
        terms += [f"{w:.3f} × {name} scores" for name, w in zip(e.members, e.weights[1:])]
        text = "shipped scores = " + " + ".join(terms) + " + a per-class bias, weights fitted by log-loss on validation"
        if e.decision == "headline":
            offsets = ", ".join(f"{n} {o:+.1f}" for n, o in zip(self.labels, e.offsets))
            text += f"; then per-class offsets ({offsets}) tuned on validation for {self.results.analysis.metric}"
        return text

    def metric_keys(self, compact: bool = False) -> list[str]:
        """Metric names; ``compact`` leaves out per-class ones (they have their own table)."""
        keys = [k for k in self.results.final if k != "loss"]
        if compact:
            keys = [k for k in keys if not any(k.endswith(f"_{label}") for label in self.labels)]
        return keys

    def notes(self) -> list[str]:
        """Warnings a reader must see next to the numbers."""
        found = []
        n = self.results.train.eval_samples
        if warning := small_eval_warning(n):
            found.append(warning)
        return found

    def verdict(self) -> str | None:
        """One line: does the model beat the strongest baseline on the headline metric? Said on
        the test split when there is one (the baseline was chosen on validation), with the
        paired-bootstrap interval of the difference."""
        r, v = self.results, self.results.verdict
        if not v:
            return None
        split = "test" if r.test is not None and "test" in v.differences else "validation"
        metric, name, diff = v.metric, v.baseline, v.differences.get(split)
        model = (r.test if split == "test" else r.final).get(metric)
        base = ((r.test_baselines if split == "test" else r.baselines) or {}).get(name, {}).get(metric)
        if model is None or base is None:
            return None
        head = (f"{split} {metric}: model {model:.3f}, strongest baseline {name} {base:.3f} (chosen on validation)")
        if diff is None:  # no bootstrap: the point values only
            ahead = (model > base) == greater_is_better(metric) and model != base
            return head + (" — the model is ahead (no intervals: bootstrap_resamples = 0)" if ahead
                           else " — the model does not beat it")
        gain = diff["difference"] if greater_is_better(metric) else -diff["difference"]
        if diff["significant"]:
            outcome = "the model beats it significantly" if gain > 0 else "the model is significantly worse"
        else:
            outcome = "the model does not beat it significantly"
        return (head + f"; difference {diff['difference']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] "
                f"(95% paired bootstrap, p = {diff['p']:.3f}) — {outcome}")

    def comparison_rows(self):
        base, final = self.results.baseline, self.results.final
        for key in final:
            if key in base:
                yield key, base[key], final[key], final[key] - base[key]

    def group_tables(self, titles: tuple[str, str]) -> list[tuple[str, dict]]:
        """(title, group -> figures) for the validation and the test split's per-group figures, where there are any."""
        a = self.results.analysis
        found = zip(titles, (a.by_group, a.test_by_group) if a else (None, None))
        return [(title, groups) for title, groups in found if groups]


class NullProgress:
    def update(self, step, logs=None):
        pass

    def close(self):
        pass


class LiveProgress:
    def __init__(self, console: Console, total: int):
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
                                 refresh_per_second=2)  # redraws cost CPU the training loop wants
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
        trainable = sum(p.numel() for p in components.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in components.model.parameters())
        splits = components.splits
        table = Table.grid(padding=(0, 2))
        rows = [
            ("experiment", experiment.name + (f" — {experiment.config.get('description')}" if experiment.config.get("description") else "")),
            ("model", f"{components.loaded.source} ({experiment.config['model']['use']})"),
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

    def data(self, report) -> None:
        """Label balance per split and anything suspicious in the data, before training."""
        table = Table(title="labels per split", title_justify="left")
        table.add_column("split")
        labels = list(next(iter(report.distribution.values())))
        for label in labels:
            table.add_column(label, justify="right")
        for split, counts in report.distribution.items():
            table.add_row(split, *(str(counts[label]) for label in labels))
        self.console.print(table)
        for finding in report.findings():
            self.console.print(f"[bold yellow]data:[/] {finding}")

    def progress(self, total: int):
        if self.console.quiet:
            return NullProgress()
        return LiveProgress(self.console, total)

    def final(self, summary: Summary, run_dir) -> None:
        c = self.console
        c.rule("[bold]results")
        if verdict := summary.verdict():
            c.print(f"[bold]verdict:[/] {verdict}")
        if composition := summary.composition():
            c.print(f"[bold]what ships:[/] {composition}")
        for table in (comparison_table(summary), per_class_table(summary), confusion_table(summary),
                      baselines_table(summary)):
            c.print(table)
        self.errors(summary)
        self.test_split(summary)
        if line := calibration_line(summary.results.calibration):
            c.print(line)
        for note in summary.notes():
            c.print(f"[bold yellow]warning:[/] {note}")
        self.training(summary)
        if run_dir is not None:
            c.print(f"[bold green]run directory:[/] {run_dir}")

    def errors(self, summary: Summary) -> None:
        """The label pairs most confused, and the per-group tables."""
        analysis = summary.results.analysis
        if analysis and analysis.most_confused:
            self.console.print("most confused: " + "; ".join(f"{m.label} → {m.predicted} ×{m.count}"
                                                             for m in analysis.most_confused[:3]))
        for title, groups in summary.group_tables(("per group (validation)", "per group (test)")):
            table = Table(title=title, title_justify="left")
            columns = list(next(iter(groups.values())))
            table.add_column("group")
            for col in columns:
                table.add_column(col, justify="right")
            for group, values in groups.items():
                table.add_row(group, *(fmt(values[col]) for col in columns))
            self.console.print(table)

    def test_split(self, summary: Summary) -> None:
        if summary.results.test is None:
            return
        keys = summary.metric_keys(compact=True)
        for name, metrics, ci in summary.test_rows():
            self.console.print(f"[bold]test split ({name}):[/] " + ", ".join(
                f"{k} {with_interval(v, ci.get(k))}" for k, v in metrics.items() if k in keys))

    def training(self, summary: Summary) -> None:
        """Confidence, then how long training took and what it chose."""
        c, train = self.console, summary.results.train
        c.print(f"mean confidence {summary.mean_confidence:.3f} (correct {summary.mean_confidence_correct:.3f}, "
                f"wrong {summary.mean_confidence_wrong:.3f})")
        c.print(f"trained {train.global_step} steps in {train.runtime_s:.1f}s ({train.samples_per_second:.1f} samples/s)"
                + (", stopped early" if train.stopped_early else "")
                + (f"; best step {train.best_step} restored" if train.restored_best else "")
                + f"; wall time {summary.wall_time_s:.1f}s")
        if refit := refit_line(summary.results):
            c.print(refit)


def comparison_table(summary: Summary) -> Table:
    table = Table(title="before vs after training (validation split)", title_justify="left")
    for col in ("metric", "before", "after", "delta"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, before, after, delta in summary.comparison_rows():
        color = "green" if (delta > 0) != (key in ("loss", "mse", "mae")) else "red"
        table.add_row(key, fmt(before), fmt(after), f"[{color}]{delta:+.4f}[/]")
    return table


def per_class_table(summary: Summary) -> Table:
    table = Table(title="per class (final model)", title_justify="left")
    for col in ("label", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="right" if col != "label" else "left")
    for row in summary.per_class:
        table.add_row(row["label"], *(fmt(row[k]) for k in ("precision", "recall", "f1")), str(row["support"]))
    return table


def confusion_table(summary: Summary) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in summary.labels:
        table.add_column(name, justify="right")
    for name, row in zip(summary.labels, summary.confusion):
        table.add_row(name, *(str(v) for v in row))
    return table


def baselines_table(summary: Summary) -> Table:
    keys = summary.metric_keys(compact=True)
    table = Table(title="against baselines (validation split, 95% bootstrap intervals)", title_justify="left")
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics, intervals in summary.leaderboard():
        table.add_row(name, *(with_interval(metrics[k], intervals.get(k)) for k in keys if k in metrics))
    return table


def calibration_line(cal) -> str | None:
    if not cal:
        return None
    line = f"calibration: ECE {cal.ece_before:.3f}"
    if cal.ece_after is not None:
        line += f" → {cal.ece_after:.3f} with temperature {cal.temperature:.2f} (fitted on validation)"
    if cal.test_ece_before is not None:
        line += f"; on test {cal.test_ece_before:.3f}" + (f" → {cal.test_ece_after:.3f}" if cal.test_ece_after is not None else "")
    return line


def refit_line(results: Results) -> str | None:
    """What ships under refit_on_validation, and which model each split's figures are."""
    refit = results.train.refit
    if not refit:
        return None
    return (f"shipped: trained anew on train + validation ({refit.train_samples} examples, {refit.epochs:g} epochs, "
            f"{refit.runtime_s:.1f}s); validation figures are the first pass's model"
            + (", test figures the shipped one's" if results.test is not None else ""))


def markdown(summary: Summary, experiment, environment: dict) -> str:
    """report.md: the same figures as the console, as a document to keep with the run."""
    lines = [f"# {experiment.name}", ""]
    if experiment.config.get("description"):
        lines += [experiment.config["description"], ""]
    lines += md_overview(summary, environment)
    plots = summary.results.plots or PlotFiles()
    if plots.loss:
        lines += [f"![loss curves]({plots.loss})", ""]
    lines += md_model_tables(summary, plots)
    lines += md_errors(summary)
    lines += md_test_split(summary)
    lines += md_calibration(summary.results.calibration, plots)
    lines += md_data(summary.results.data)
    lines += ["", "## Confidence", "",
              f"mean {summary.mean_confidence:.3f}; on correct predictions {summary.mean_confidence_correct:.3f}, "
              f"on wrong ones {summary.mean_confidence_wrong:.3f}.", "",
              f"Files: `{layout.CONFIG}` (the resolved experiment), `{layout.ENVIRONMENT}`, `{layout.METRICS}`, "
              f"`{layout.RESULTS}`, `{layout.PREDICTIONS}`, `{layout.MISCLASSIFIED}`, `{layout.MODEL}/`, "
              f"`{layout.CHECKPOINTS}/`, `{layout.PLOTS}/`.", ""]
    return "\n".join(lines)


def md_overview(summary: Summary, environment: dict) -> list[str]:
    """The model, the device, how training went; the verdict, what ships, warnings, the baselines table."""
    r = summary.results
    model, train = r.model, r.train
    lines = [
        f"- model: `{model.source}` ({model.use}), adapter: `{model.adapter}`",
        f"- device: {environment.get('device')} × {environment.get('world_size')} process(es)",
        f"- training: {train.global_step} steps, {train.epochs} epochs, {train.runtime_s:.1f}s, "
        f"{train.samples_per_second} samples/s" + (" (stopped early)" if train.stopped_early else ""),
        f"- best model: step {train.best_step} by {train.metric_for_best_model} = {fmt(train.best_metric)}"
        + (" (restored)" if train.restored_best else ""),
        f"- evaluation split: {train.eval_samples} examples",
        *([f"- {refit}"] if (refit := refit_line(r)) else []),
        "",
    ]
    if verdict := summary.verdict():
        lines += [f"**Verdict:** {verdict}.", ""]
    if composition := summary.composition():
        lines += [f"**What ships:** {composition}. `stancerun predict` applies all of it; "
                  "the row \"fine-tuned alone\" is the transformer without it.", ""]
    lines += [f"> **Warning:** {note}." for note in summary.notes()] + ([""] if summary.notes() else [])
    keys = summary.metric_keys()
    lines += ["## Against baselines", "", "Validation split; brackets: 95% bootstrap interval.", "",
              "| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, metrics, intervals in summary.leaderboard():
        lines.append(f"| {name} | " + " | ".join(with_interval(metrics[k], intervals.get(k)) for k in keys if k in metrics) + " |")
    return lines + [""]


def md_model_tables(summary: Summary, plots: PlotFiles) -> list[str]:
    """Before vs after training, per class, and the confusion matrix."""
    lines = ["## Before vs after training", "", "| metric | before | after | delta |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {fmt(b)} | {fmt(a)} | {d:+.4f} |" for k, b, a, d in summary.comparison_rows()]
    lines += ["", "## Per class (final model)", "", "| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {row['label']} | {fmt(row['precision'])} | {fmt(row['recall'])} | {fmt(row['f1'])} | {row['support']} |"
              for row in summary.per_class]
    lines += ["", "## Confusion matrix", "", "rows: true label, columns: prediction", "",
              "| | " + " | ".join(summary.labels) + " |", "|---|" + "---:|" * len(summary.labels)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(summary.labels, summary.confusion)]
    if plots.confusion:
        lines += ["", f"![confusion matrix]({plots.confusion})"]
    return lines


def md_errors(summary: Summary) -> list[str]:
    """The label pairs most confused, and the per-group tables."""
    lines = []
    analysis = summary.results.analysis
    if analysis and analysis.most_confused:
        lines += ["", "## Most confused", "", "| true | predicted | count | share of true label |", "|---|---|---:|---:|"]
        lines += [f"| {m.label} | {m.predicted} | {m.count} | {m.share_of_label:.2f} |" for m in analysis.most_confused]
        lines += ["", f"Every mistake, most confident first: `{layout.MISCLASSIFIED}`."]
    for title, groups in summary.group_tables(("Per group (validation)", "Per group (test)")):
        columns = list(next(iter(groups.values())))
        lines += ["", f"## {title}", "", "| group | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {g} | " + " | ".join(fmt(v[c]) for c in columns) + " |" for g, v in groups.items()]
    return lines


def md_test_split(summary: Summary) -> list[str]:
    if summary.results.test is None:
        return []
    keys = summary.metric_keys()
    lines = ["", "## Test split", "", "Brackets: 95% bootstrap interval.", "",
             "| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    return lines + [f"| {name} | " + " | ".join(with_interval(m[k], ci.get(k)) for k in keys if k in m) + " |"
                    for name, m, ci in summary.test_rows()]


def md_calibration(cal, plots: PlotFiles) -> list[str]:
    if not cal:
        return []
    lines = ["", "## Calibration", "", f"Expected calibration error (15 bins) on validation: {cal.ece_before:.4f}"
             + (f", {cal.ece_after:.4f} after temperature scaling (T = {cal.temperature:.3f}, fitted on "
                "validation, so this number is optimistic)" if cal.ece_after is not None else "") + "."]
    if cal.test_ece_before is not None:
        lines += ["", f"On the test split: {cal.test_ece_before:.4f}"
                  + (f" before, {cal.test_ece_after:.4f} after scaling" if cal.test_ece_after is not None else "") + "."]
    if plots.reliability:
        lines += ["", f"![reliability diagram]({plots.reliability})"]
    return lines


def md_data(data) -> list[str]:
    """Label counts per split, leakage, what was dropped or truncated."""
    if not data:
        return []
    names = list(next(iter(data.distribution.values())))
    lines = ["", "## Data", "", "| split | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {split} | " + " | ".join(str(c[n]) for n in names) + " |" for split, c in data.distribution.items()]
    for leak in data.leaks:
        if leak.normalised:
            lines += ["", f"- **Leakage:** {leak.normalised} {leak.split} example(s) also in train ({leak.exact} exact)."]
    if data.dropped_for_leakage:
        lines += [f"- {data.dropped_for_leakage} training example(s) dropped for leakage."]
    for split, n in (data.truncated or {}).items():
        if n:
            lines += [f"- {n} {split} text(s) truncated at max_length."]
    return lines
