"""Ways of combining the few-shot recipe's model with the frozen-embedding probe, measured on the
validation draws of benchmarks/fewshot_validation.py without training again: each recipe run there
keeps its scores (fewshot_validation.scores/), and the probe is refitted here in seconds.

    python benchmarks/fewshot_combine.py              # every data set and k the kept scores cover

Rules, each scored by macro-F1 on the draw's scoring rows, paired with the recipe alone and with the
better of probe_all and setfit_all (their cached scores in fewshot_validation.runs.jsonl):
- recipe: the recipe's model alone (its argmax);
- probe: the probe given train + validation (probe_all: C by 4-fold cross-validation, macro-F1);
- mean: the mean of the two's probabilities (the recipe's at its fitted temperature);
- chosen: the weight of the recipe's probabilities among MIX chosen on the validation draw (the first
  pass's model, trained on train, against the probe fitted on train), as an [ensemble] would choose it;
- gmean, gchosen: the same in log space (a weighted geometric mean), which is what an [ensemble] stack
  computes: w × log p(recipe) + (1 − w) × log p(probe).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot as bench  # noqa: E402
import fewshot_validation as lab  # noqa: E402

MIX = (0.0, 0.25, 0.5, 0.75, 1.0)  # the recipe's weight; the probe's is 1 - it


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def probe(ctx, train, scored, cv: bool = True):
    """Probabilities of the probe fitted on ``train``, on each of ``scored``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(min(bench.PROBE_FOLDS, min(np.bincount(train.labels))), shuffle=True, random_state=0)
    model = LogisticRegressionCV(Cs=list(bench.PROBE_C), cv=folds, scoring="f1_macro", max_iter=5000)
    model.fit(ctx.encode(bench.joined(train)), train.labels)
    return [model.predict_proba(ctx.encode(bench.joined(e))) for e in scored]


def main() -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stancerun import resolve_model
    from stancerun.data.rows import concat
    from stancerun.registry.discovery import get_registry

    registry = get_registry()
    ctx = bench.Context(resolve_model(bench.MODEL), registry, {})
    records = lab.read()
    current = lab.settings("recipe")
    runs = [r for r in records if r["variant"] == "recipe" and r.get("settings") == current and r.get("scores_file")]
    rivals = defaultdict(dict)
    for r in records:
        if r["variant"] in bench.SAME_LABELS:
            rivals[(r["data"], r["k"], r["draw"])][r["variant"]] = r[bench.SCORE]
    table = defaultdict(lambda: defaultdict(dict))  # (data, k) -> rule -> draw -> score
    datasets = {}
    for r in sorted(runs, key=lambda r: (r["data"], r["k"], r["draw"])):
        data = datasets.setdefault(r["data"], lab.validation_data(r["data"], registry))
        train, validation = bench.draw(data.pool, r["k"], 777000 + 1000 * r["k"] + r["draw"])
        scoring = data.scoring if r["data"] == "tweeteval" else lab.left_over(data.pool, train, validation)
        kept = np.load(lab.SCORES / r["scores_file"])
        recipe = softmax(kept["scoring_logits"], float(kept["temperature"]))
        gold, ids = scoring.labels, range(len(data.labels))
        assert abs(bench.macro_f1(gold, recipe.argmax(1), ids) - r[bench.SCORE]) < 1e-9, "scores out of step"
        (probe_scoring,) = probe(ctx, concat(train, validation), [scoring])
        first_pass = kept["validation_probs"]
        (probe_validation,) = probe(ctx, train, [validation])
        mixes = {"chosen": lambda a, b, w: w * a + (1 - w) * b,
                 "gchosen": lambda a, b, w: w * np.log(np.clip(a, 1e-12, None)) + (1 - w) * np.log(np.clip(b, 1e-12, None))}
        weights = {rule: max(MIX, key=lambda w: (bench.macro_f1(validation.labels, mix(first_pass, probe_validation, w)
                                                               .argmax(1), ids), -abs(w - 0.5)))
                   for rule, mix in mixes.items()}
        cell = table[(r["data"], r["k"])]
        for rule, scores in {"recipe": recipe, "probe": probe_scoring, "mean": (recipe + probe_scoring) / 2,
                             "gmean": mixes["gchosen"](recipe, probe_scoring, 0.5),
                             **{rule: mix(recipe, probe_scoring, weights[rule]) for rule, mix in mixes.items()}}.items():
            cell[rule][r["draw"]] = bench.macro_f1(gold, scores.argmax(1), ids)
        cell["chosen weight"][r["draw"]] = weights["chosen"]
        best = rivals.get((r["data"], r["k"], r["draw"]), {})
        if len(best) == len(bench.SAME_LABELS):
            cell["better rival"][r["draw"]] = max(best.values())
    rules = ("recipe", "probe", "mean", "chosen", "gmean", "gchosen")
    print("| data | k | draws | " + " | ".join([*rules, "each draw's better rival", *(f"{r} − recipe" for r in rules[2:]),
                                                  *(f"{r} − rival" for r in rules[2:]), "chosen weights"]) + " |")
    print("|---|---:|---:|" + "---:|" * (len(rules) + 2 * len(rules[2:]) + 2))
    gaps = defaultdict(list)
    for (name, k), cell in sorted(table.items()):
        draws = sorted(cell["recipe"])
        rival = [d for d in draws if d in cell["better rival"]]
        mean = lambda rule, ds: 100 * np.mean([cell[rule][d] for d in ds]) if ds else float("nan")  # noqa: E731
        diff = lambda a, b, ds: 100 * np.mean([cell[a][d] - cell[b][d] for d in ds]) if ds else float("nan")  # noqa: E731
        for rule in rules:
            gaps[rule] += [100 * (cell[rule][d] - cell["better rival"][d]) for d in rival]
        print(f"| {name} | {k} | {len(draws)} | " + " | ".join(f"{mean(r, draws):.1f}" for r in rules)
              + f" | {mean('better rival', rival):.1f} | " + " | ".join(f"{diff(r, 'recipe', draws):+.1f}" for r in rules[2:])
              + " | " + " | ".join(f"{diff(r, 'better rival', rival):+.1f}" for r in rules[2:])
              + f" | {', '.join(str(cell['chosen weight'][d]) for d in draws)} |")
    print()
    for rule, values in gaps.items():
        print(f"{rule} − each draw's better rival: {np.mean(values):+.2f} over {len(values)} draws")
    print(json.dumps({"runs": len(runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
