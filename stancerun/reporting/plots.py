"""The pictures in report.md: loss curves, the confusion matrix, the reliability diagram, the
learning curve. matplotlib with the Agg backend (no display); each figure is written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from stancerun.rundir.artifacts import atomic_write


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    atomic_write(path, buffer.getvalue())


def loss_curves(history: list[dict], path: Path) -> bool:
    """Training loss per logging step and validation loss per evaluation."""
    train = [(e["step"], e["loss"]) for e in history if e["type"] == "train"]
    evals = [(e["step"], e["eval_loss"]) for e in history if e["type"] in ("baseline", "eval")]
    if not train and not evals:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    plt = _figure()
    size = 1.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() or 1
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    _save(fig, path)


def reliability(curves: dict, path: Path) -> None:
    """Accuracy against confidence per bin; the diagonal is perfect calibration.
    ``curves``: label -> stats.Reliability."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    for label, rel in curves.items():
        filled = rel.counts > 0
        ax.plot(rel.confidence[filled], rel.accuracy[filled], "o-", label=f"{label} (ECE {rel.ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def learning_curve(sizes: list[int], series: dict[str, list[dict]], metric: str, path: Path,
                   confidence: float = 0.95) -> None:
    """The headline metric against labelled examples per class (log2 axis): one line per
    contender, ``series``: name -> one stats.aggregate dict per size, drawn as the mean with
    its interval as error bars (none where a single repeat gives no interval)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.asarray(sizes, dtype=float)
    # Each line is nudged sideways a little (in log2 units) so overlapping error bars stay readable.
    nudges = np.linspace(-0.06, 0.06, len(series)) if len(series) > 1 else [0.0]
    for (name, points), nudge in zip(series.items(), nudges):
        mean = np.array([p["mean"] for p in points])
        low = np.nan_to_num(mean - np.array([p["low"] for p in points]))
        high = np.nan_to_num(np.array([p["high"] for p in points]) - mean)
        ax.errorbar(x * 2.0 ** nudge, mean, yerr=[low, high], marker="o", capsize=3,
                    linewidth=2.2 if name == "model" else 1.2, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel(metric)
    ax.set_title(f"mean over the repeats, bars: {confidence:.0%} interval", fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
