"""Learning curves: is labelling more worth it?

``[evaluation] learning_curve = [8, 16, 32, 64]`` runs the experiment on k labelled examples per
class for each size k, ``repeats`` times per size, and scores every run on one fixed split. Each
draw takes k training and k validation examples per class from a pool (stratified, seeded by the
experiment's seed, the size and the repeat, so every contender with the same seed trains on the same
draws) and is a full run in ``k{size}-r{repeat}/`` inside the parent, which holds summary.json,
report.md and plots/learning_curve.png: the headline metric per size for the model and each
baseline, and whether the curve is still rising between the two largest sizes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from stancerun.rundir import artifacts
from stancerun.rundir.layout import PLOTS, REPORT, RunDir
from stancerun.config.experiment import Experiment
from stancerun.data.rows import Examples, Splits, concat
from stancerun.errors import UsageError
from stancerun.studies.repeats import with_changes
from stancerun.config.schema import greater_is_better

PLOT = f"{PLOTS}/learning_curve.png"


def draw_seed(seed: int, size: int, repeat: int) -> int:
    """One seed per (experiment seed, size, repeat): stable across machines and Python versions
    (no ``hash()``), so a benchmark reproduces a run's draws from its config alone."""
    digest = hashlib.sha256(f"learning_curve/{seed}/{size}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def draw_indices(labels: list[int], k: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices into ``labels``: k of each label present in each, disjoint."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    train, validation = [], []
    for label, indices in sorted(by_label.items()):
        if len(indices) < 2 * k:
            raise UsageError(f"evaluation.learning_curve: {k} examples per class needs {2 * k} of label {label}, "
                             f"the pool has {len(indices)}")
        indices = indices[:]
        rng.shuffle(indices)
        train += indices[:k]
        validation += indices[k : 2 * k]
    return sorted(train), sorted(validation)


def draw(pool: Examples, k: int, seed: int) -> tuple[Examples, Examples]:
    """k training and k validation examples per class from ``pool``, disjoint and stratified;
    the same pool, k and seed always give the same draw (see :func:`draw_seed`)."""
    train, validation = draw_indices(pool.labels, k, seed)
    return pool.subset(train), pool.subset(validation)


@dataclass
class Sources:
    """Where draws come from (``pool``) and what every draw is scored on (``scoring``)."""

    pool: Examples
    pool_from: str  # in words, for the report
    scoring: Examples
    split: str  # "test" or "validation": the dataset's split the scores come from
    split_from: str


def sources(splits: Splits) -> Sources:
    """The test split scores every draw when there is one (never drawn from); otherwise the
    validation split does, and only the training split is drawn from, so no draw sees it."""
    if splits.test is not None:
        if splits.validation_from_split:
            return Sources(concat(splits.train, splits.validation), "train plus the carved validation split",
                           splits.test, "test", "the test split")
        return Sources(splits.train, "the training split; the validation file is not used", splits.test, "test",
                       "the test split")
    where = "carved from the training data" if splits.validation_from_split else "its own file"
    return Sources(splits.train, "the training split", splits.validation, "validation",
                   f"the validation split ({where})")


def check_sizes(pool: Examples, names: list[str], sizes: list[int], pool_from: str = "") -> None:
    """Raise one :class:`UsageError` for the smallest size some label cannot supply twice over
    (k to train on, k to validate on), naming every label that falls short."""
    counts = [0] * len(names)
    for label in pool.labels:
        counts[label] += 1
    for size in sizes:
        short = [f"'{names[i]}' has {n}" for i, n in enumerate(counts) if n < 2 * size]
        if short:
            most = min(counts) // 2
            hint = f"the largest size these data allow is {most}" if most else "a label that is missing cannot be drawn"
            where = f" ({pool_from})" if pool_from else ""
            raise UsageError(f"evaluation.learning_curve: {size} examples per class needs {2 * size} of every label "
                             f"({size} to train on, {size} to validate on), but in the pool{where} "
                             f"{', '.join(short)}; {hint}")


def child_splits(src: Sources, splits: Splits, size: int, seed: int) -> Splits:
    train, validation = draw(src.pool, size, seed)
    # The scoring split always travels as the child's test split: its scores are then always
    # results.test and results.test_baselines, whichever split of the dataset it is.
    return Splits(train, validation, splits.labels, src.scoring, splits.files, False)


def plan(experiment: Experiment, splits: Splits) -> tuple[Sources, list[tuple[str, int, int, Experiment, Splits]]]:
    """(sources, [(run name, size, repeat, child experiment, child splits)]); every draw is made here,
    so a size the data cannot supply stops the run before a directory exists or anything trains."""
    ev = experiment.evaluation
    src = sources(splits)
    check_sizes(src.pool, splits.labels, ev.learning_curve, src.pool_from)
    seed = experiment.config["seed"]
    children = []
    for size in ev.learning_curve:
        for repeat in range(1, ev.repeats + 1):
            name = f"k{size}-r{repeat}"
            # A different model seed per repeat too, so the spread covers initialisation as well as the draw.
            child = with_changes(experiment, name=f"{experiment.name}-{name}", seed=seed + repeat,
                                 evaluation={**experiment.config["evaluation"], "learning_curve": [], "cv_folds": 0,
                                             "seeds": []})
            children.append((name, size, repeat, child, child_splits(src, splits, size, draw_seed(seed, size, repeat))))
    return src, children


def check(experiment: Experiment, registry) -> None:
    """What `validate` can tell without training: whether the data can supply every size."""
    from stancerun.config.experiment import build

    plan(experiment, build(registry, "datasets", experiment.config["data"]).load())


def run_curve(experiment: Experiment, output_dir: str | None = None, registry=None) -> Path:
    from rich.console import Console

    from stancerun.config.experiment import build
    from stancerun.registry.discovery import get_registry
    from stancerun.engine.run import run_experiment

    registry = registry or get_registry()
    ev = experiment.evaluation
    console = Console()
    splits = build(registry, "datasets", experiment.config["data"]).load()
    src, children = plan(experiment, splits)
    parent = artifacts.new_run_dir(experiment.config["output_dir"], experiment.name, output_dir)
    artifacts.atomic_write(RunDir(parent).config, experiment.to_toml())
    runs = []
    for i, (name, size, repeat, child, child_data) in enumerate(children, 1):
        console.print(f"[bold]{name}[/] ({i}/{len(children)}): {size} examples per class, "
                      f"{len(child_data.train)} to train on")
        run_dir = run_experiment(child, output_dir=str(parent / name), registry=registry, splits=child_data, quiet=True)
        results = RunDir(run_dir).read_results()
        runs.append({"name": name, "size": size, "repeat": repeat, "train": len(child_data.train), "results": results})
        metric = results.analysis.metric
        console.print(f"  {metric} {results.test[metric]:.4f} on the {src.split} split")
    summary = summarise(runs, ev.confidence)
    summary.update({"split": src.split, "split_from": src.split_from, "scored_examples": len(src.scoring),
                    "pool": {"examples": len(src.pool), "from": src.pool_from}, "repeats": ev.repeats,
                    "seed": experiment.config["seed"]})
    if ev.plots:
        from stancerun.reporting import plots

        series = {"model": [row["model"] for row in summary["curve"]]}
        for baseline in summary["baselines"]:
            series[baseline] = [row["baselines"][baseline] for row in summary["curve"]]
        plots.learning_curve(summary["sizes"], series, summary["metric"], parent / PLOT, ev.confidence)
        summary["plots"] = {"learning_curve": PLOT}
    artifacts.write_json(RunDir(parent).summary, summary)
    artifacts.atomic_write(RunDir(parent).report, markdown(experiment.name, summary))
    print_summary(console, summary, parent)
    return parent


def summarise(runs: list[dict], confidence: float) -> dict:
    """summary.json without the data's description: per size, the mean and t-interval of the
    headline metric over the repeats for the model and each baseline, and the trend."""
    from stancerun.evaluation.stats import aggregate

    metric = runs[0]["results"].analysis.metric
    sizes = sorted({r["size"] for r in runs})
    # Baselines every run scored: a plugin baseline that failed somewhere would make rows of unequal n.
    baselines = [b for b in runs[0]["results"].test_baselines or {}
                 if all(b in (r["results"].test_baselines or {}) for r in runs)]
    curve, model_scores = [], {}
    for size in sizes:
        at = sorted((r for r in runs if r["size"] == size), key=lambda r: r["repeat"])
        model_scores[size] = [r["results"].test[metric] for r in at]
        curve.append({"size": size, "train_examples": at[0]["train"], "runs": [r["name"] for r in at],
                      "model": aggregate(model_scores[size], confidence),
                      "baselines": {b: aggregate([r["results"].test_baselines[b][metric] for r in at], confidence)
                                    for b in baselines}})
    return {"mode": "learning_curve", "metric": metric, "greater_is_better": greater_is_better(metric),
            "confidence": confidence, "sizes": sizes, "baselines": baselines, "runs": [r["name"] for r in runs], "curve": curve,
            "trend": trend(model_scores, metric, confidence)}


def trend(scores: dict[int, list[float]], metric: str, confidence: float = 0.95) -> dict:
    """Is the curve still rising at the largest size? The paired difference (same repeat index:
    same model seed) between the two largest sizes, its t-interval, and a sentence saying so.
    ``scores``: size -> the model's score per repeat, in repeat order. ``rising`` is None when
    it cannot be told (one size, one repeat, or an interval that spans no change)."""
    from stancerun.evaluation.stats import aggregate

    sizes = sorted(scores)
    if len(sizes) < 2:
        return {"rising": None, "sentence": f"With one size ({sizes[0]} examples per class) the curve has no slope: add "
                                            "a larger size to evaluation.learning_curve to tell whether labelling more "
                                            "is worth it."}
    a, b = sizes[-2:]
    diffs = [after - before for before, after in zip(scores[a], scores[b])]
    diff = aggregate(diffs, confidence)
    greater = greater_is_better(metric)
    # Metrics on a 0-1 scale read best as points (hundredths); anything else as it is.
    points = all(0 <= v <= 1 for size in (a, b) for v in scores[size])

    def show(x: float) -> str:
        return f"{x * 100:+.1f}" if points else f"{x:+.3g}"

    unit = f" points of {metric}" if points else f" in {metric}"
    verb = "gained" if greater and diff["mean"] >= 0 else "changed by"
    head = f"From {a} to {b} examples per class the model {verb} {show(diff['mean'])}{unit}"
    result = {"from": a, "to": b, "difference": diff}
    if len(diffs) < 2:
        return {**result, "rising": None,
                "sentence": f"{head}, but with one repeat per size there is no interval, so it cannot tell a real gain "
                            "from noise: set evaluation.repeats to 3 or more."}
    shown = f"({confidence:.0%} CI [{show(diff['low'])}, {show(diff['high'])}])"
    better_low, better_high = sorted((diff["low"], diff["high"]) if greater else (-diff["high"], -diff["low"]))
    if better_low == better_high == 0:
        rising, tail = False, ("every repeat scored the same at both sizes: the curve is flat here, so more labels of "
                               "the same kind are unlikely to help (unless the model is not learning at all: compare "
                               "it with the baselines).")
    elif better_low > 0:
        rising, tail = True, "the curve is still rising, so labelling more is likely worth it."
    elif better_high < 0:
        rising, tail = False, ("the score fell, so more labels of the same kind did not help here (the larger runs "
                               "may need other training settings).")
    else:  # an interval spanning 0 cannot tell a level curve from a gain too small for these repeats to show
        gain = show(diff["high"] if greater else -diff["low"])
        rising, tail = None, (f"the change is within the noise of {len(diffs)} repeats: the curve may have levelled "
                              f"off, or still be improving by as much as {gain}{unit}; more repeats would tell.")
    return {**result, "rising": rising, "sentence": f"{head} {shown}: {tail}"}


def _cell(agg: dict, short: bool = False) -> str:
    if agg["n"] < 2:
        return f"{agg['mean']:.3f}"
    if short:  # the t-interval is symmetric: half its width, under the mean, keeps terminal columns narrow
        return f"{agg['mean']:.3f}\n± {agg['high'] - agg['mean']:.3f}"
    return f"{agg['mean']:.3f} [{agg['low']:.3f}, {agg['high']:.3f}]"


def markdown(name: str, summary: dict) -> str:
    contenders = ["model", *summary["baselines"]]
    lines = [f"# {name}: learning curve", "",
             f"{summary['metric']} on {summary['split_from']} ({summary['scored_examples']} examples, the same for every "
             f"draw) against labelled examples per class. Each size was drawn {summary['repeats']} time(s) from a pool of "
             f"{summary['pool']['examples']} examples ({summary['pool']['from']}): k examples per class to train on and "
             "k more to validate on (model selection), stratified and seeded by the experiment's seed, the size and the "
             f"repeat. Every draw is a full run; figures are the mean and a {summary['confidence']:.0%} t-interval over the "
             "draws.", "",
             "| examples per class | training rows | runs | " + " | ".join(contenders) + " |",
             "|---:|---:|---:|" + "---|" * len(contenders)]
    for row in summary["curve"]:
        cells = [_cell(row["model"])] + [_cell(row["baselines"][b]) for b in summary["baselines"]]
        lines.append(f"| {row['size']} | {row['train_examples']} | {len(row['runs'])} | " + " | ".join(cells) + " |")
    lines += ["", f"**Is labelling more worth it?** {summary['trend']['sentence']}", ""]
    if "plots" in summary:
        lines += [f"![{summary['metric']} against labelled examples per class]({summary['plots']['learning_curve']})", ""]
    lines += ["Runs: " + ", ".join(f"[{d}]({d}/{REPORT})" for d in summary["runs"]), ""]
    return "\n".join(lines)


def print_summary(console, summary: dict, parent: Path) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"learning curve: {summary['metric']} on the {summary['split']} split "
                        f"(mean ± half the {summary['confidence']:.0%} interval, {summary['repeats']} draw(s) per size)",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("per class", "rows", "runs", "model", *summary["baselines"]):
        table.add_column(col, justify="right")
    for row in summary["curve"]:
        table.add_row(str(row["size"]), str(row["train_examples"]), str(len(row["runs"])), _cell(row["model"], True),
                      *(_cell(row["baselines"][b], True) for b in summary["baselines"]))
    console.print(table)
    console.print(summary["trend"]["sentence"])
    console.print(f"[bold green]run directory:[/] {parent}")
