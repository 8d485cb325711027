"""The stance recipe on real data, and what each of its parts adds: the figures of docs/results.md.

    python benchmarks/stance_recipe.py                       # runs benchmarks/tweeteval_stance.toml
    python benchmarks/stance_recipe.py --run RUN_DIR         # re-analyses a finished run

It runs the experiment as a user would (`stancerun EXPERIMENT`, one process, timed), then
loads the run directory and rebuilds, from the same fitted parts, every variant of the ablation:
the fine-tuned model alone, with the decision rule, stacked with the n-gram SVM, the embedding
probe or both (the recipe), and both with the decision rule. Each is fitted on the validation
split only and scored on the test split with 95% bootstrap intervals, and its gain over the
fine-tuned model alone with a paired bootstrap. The baselines are scored
on the same test split. Offline: HF_HUB_OFFLINE=1, the packaged MiniLM. The JSON holds figures
and settings only, never text from the data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESAMPLES = 1000
RECIPE = "+ stacked n-gram SVM and embedding probe (the recipe)"
#: (row, stacked baselines, decision rule): what is fitted on validation after training.
VARIANTS = [("+ decision rule", [], "headline"), ("+ stacked n-gram SVM", ["ngram_svm"], "argmax"),
            ("+ stacked embedding probe", ["embedding_probe"], "argmax"),
            (RECIPE, ["ngram_svm", "embedding_probe"], "argmax"),
            ("+ both stacked + decision rule", ["ngram_svm", "embedding_probe"], "headline")]
CV_FOLDS, CV_REPEATS = 5, 10


def validation_cv(logits, scores: dict, labels, names, metric_fn, headline: str, choices: dict) -> dict:
    """How each variant was chosen without the test split: fitted on 4/5 of the validation split and
    scored on the other fifth, 5 folds x 10 repeats; the mean of the pooled out-of-fold scores."""
    from sklearn.model_selection import StratifiedKFold

    from stancerun.evaluation import ensemble
    from stancerun.contracts import EvalPrediction

    found = {"fine-tuned alone": {k: float(v) for k, v in metric_fn(EvalPrediction(logits, labels, names)).items()
                                  if k in (headline, "f1_macro")}}
    for name, (members, decision) in choices.items():
        runs = []
        for repeat in range(CV_REPEATS):
            out = np.zeros_like(logits, dtype=np.float32)
            for fit_rows, held in StratifiedKFold(CV_FOLDS, shuffle=True, random_state=repeat).split(logits, labels):
                stack = ensemble.fit(logits[fit_rows], members, [scores[m][fit_rows] for m in members], labels[fit_rows],
                                     names, metric_fn, headline, decision)
                out[held] = stack.combine(logits[held], [scores[m][held] for m in members])
            runs.append(metric_fn(EvalPrediction(out, labels, names)))
        found[name] = {k: float(np.mean([r[k] for r in runs])) for k in (headline, "f1_macro")}
    return found


def run_experiment(experiment: Path, out: Path) -> tuple[Path, float]:
    """`stancerun EXPERIMENT --output-dir OUT` as a whole process; (run directory, wall seconds)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stancerun", "run", str(experiment), "--output-dir", str(out)],
                   check=True, env=env)
    return out, time.perf_counter() - started


def interval(pred, metric_fn, keys) -> dict:
    from stancerun.evaluation import stats

    found = stats.bootstrap_ci(pred, metric_fn, RESAMPLES, 0, 0.95)
    return {k: found[k] for k in keys}


def analyse(run_dir: Path) -> dict:
    from stancerun.evaluation import baselines
    from stancerun.evaluation import ensemble
    from stancerun.config import tomlio
    from stancerun.evaluation.analysis import headline_key
    from stancerun.rundir.artifacts import load_model
    from stancerun.components.assembly import combined_metrics
    from stancerun.config.experiment import build
    from stancerun.registry.discovery import get_registry
    from stancerun.inference.predict import predict_logits
    from stancerun.contracts import EvalPrediction
    from stancerun.evaluation.stats import paired_bootstrap

    registry = get_registry()
    config = tomlio.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    splits = build(registry, "datasets", config["data"]).load()
    names = splits.labels
    metric_fn = combined_metrics([build(registry, "metrics", table) for table in config["metrics"]])
    headline = headline_key(config, results["final"])
    keys = [headline, "f1_macro"]

    saved = load_model(run_dir / "model", registry=registry)
    logits = {split: predict_logits(saved.model, saved.tokenizer, examples.texts, examples.pairs, saved.max_length, 64)
              for split, examples in (("validation", splits.validation), ("test", splits.test))}
    labels = {split: np.asarray(getattr(splits, split).labels) for split in logits}
    fitted = baselines.fit(registry, config["evaluation"]["baselines"], splits.train, names)
    scores = baselines.score_all(fitted, {"validation": splits.validation, "test": splits.test}, len(names))

    choices = {name: (members, decision) for name, members, decision in VARIANTS}
    selection = validation_cv(logits["validation"], scores["validation"], labels["validation"], names, metric_fn,
                              headline, choices)

    def variant(members: list[str], decision: str):
        stack = ensemble.fit(logits["validation"], members, [scores["validation"][m] for m in members],
                             labels["validation"], names, metric_fn, headline, decision)
        return stack, stack.combine(logits["test"], [scores["test"][m] for m in members])

    variants = {"fine-tuned alone": (None, logits["test"])}
    variants.update({name: variant(members, decision) for name, (members, decision) in choices.items()})
    alone = EvalPrediction(logits["test"], labels["test"], names)
    rows = {}
    for name, (stack, test_scores) in variants.items():
        pred = EvalPrediction(test_scores, labels["test"], names)
        gain = paired_bootstrap(pred, alone, metric_fn, RESAMPLES, 0) if stack is not None else None
        rows[name] = {"test": interval(pred, metric_fn, keys), "stack": stack.to_dict() if stack else None,
                      "gain": {k: gain[k] for k in keys} if gain else None, "validation_cv": selection.get(name)}
    for name, test_scores in scores["test"].items():
        rows[f"baseline: {name}"] = {"test": interval(EvalPrediction(test_scores, labels["test"], names), metric_fn, keys)}
    shipped = rows[RECIPE]["test"]
    # The run's own report must say the same as this rebuild.
    assert abs(shipped[headline]["value"] - results["test"][headline]) < 1e-6, "the rebuilt stack differs from the run's"
    return {"run": str(run_dir), "headline": headline, "rows": rows, "verdict": results.get("verdict"),
            "train": results["train"], "test_examples": int(len(labels["test"]))}


def table(found: dict) -> str:
    headline = found["headline"]
    lines = [f"| system | {headline} (validation, 5-fold) | f1_macro (validation, 5-fold) | {headline} (test) | "
             f"f1_macro (test) | gain in {headline} (test) | gain in f1_macro (test) |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(ci):
        return f"{100 * ci['value']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"

    def gain(g):
        return f"{100 * g['difference']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]" if g else ""

    for name, row in found["rows"].items():
        g, cv = row.get("gain") or {}, row.get("validation_cv") or {}
        chosen = " | ".join(f"{100 * cv[k]:.1f}" if k in cv else "" for k in (headline, "f1_macro"))
        lines.append(f"| {name} | {chosen} | {cell(row['test'][headline])} | {cell(row['test']['f1_macro'])} | "
                     f"{gain(g.get(headline))} | {gain(g.get('f1_macro'))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", type=Path, default=ROOT / "benchmarks" / "tweeteval_stance.toml")
    parser.add_argument("--run", type=Path, help="analyse this finished run instead of running the experiment")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "stance_recipe.json")
    parser.add_argument("--output-dir", type=Path, help="keep the run here (default: a temporary folder, deleted)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wall = None
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run
        if run_dir is None:
            run_dir, wall = run_experiment(args.experiment, args.output_dir or Path(tmp) / "run")
        found = analyse(run_dir)
        if wall is None and args.json.is_file():  # re-analysing the run this file measured: keep its wall time
            before = json.loads(args.json.read_text(encoding="utf-8"))
            wall = before.get("wall_time_s") if before.get("run") == str(run_dir) else None
        found.update({"experiment": str(args.experiment), "wall_time_s": wall, "cpu_count": os.cpu_count(),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(table(found))
    if wall is not None:
        print(f"\nwall time of `stancerun {args.experiment.name}`: {wall:.0f} s on {os.cpu_count()} CPU(s)")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
