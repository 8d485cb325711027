"""Choosing the few-shot recipe on validation data only: variants of experiments/recipes/fewshot.toml
and the contenders of benchmarks/fewshot.py on draws that never touch a test split.

    python benchmarks/fewshot_validation.py --data tweeteval demo --sizes 16 --draws 3 --variants recipe head_C_100 setfit
    python benchmarks/fewshot_validation.py --summary-only

- tweeteval: draws from train.csv, scored on validation.csv (test.csv, loaded with the rest by the
  benchmark's reader, is neither drawn from nor scored);
- demo: draws from the benchmark's pool half of policy_stance.csv, scored on the pool rows the draw left
  (the benchmark's scoring half is neither drawn from nor scored).

Draw d at size k uses seed 777000 + 1000 k + d, so these draws differ from the benchmark's. A variant is
the recipe with a few keys changed (VARIANTS); "probe", "setfit" and "full" are the benchmark's
contenders. Each finished run is appended to benchmarks/results/fewshot_validation.runs.jsonl, keyed by
data, k, draw, variant and `settings` (the recipe files' content and the variant's changes), so a rerun only
runs what is missing and the summary shows only runs of the current settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot as bench  # noqa: E402  (the benchmark's data, draws and contenders)

#: The recipe with these keys changed (merged through `extends`).
VARIANTS = {
    "recipe": {},
    "head_C_100": {"adapter": {"head_C": 100.0}},  # scikit-learn's C = head_C / n; the recipe's 500 gives 10 at k=16
    "head_C_2500": {"adapter": {"head_C": 2500.0}},
    "epochs10_lr2e-5": {"training": {"num_train_epochs": 10, "learning_rate": 2e-5}},  # the first recipe's loop
    "steps60": {"adapter": {"steps": 60}},
    "sep": {"model": {"pair_format": "{pair} [SEP] {text}"}},
    "last": {"training": {"load_best_model_at_end": False}},  # the last epoch, no choice on validation
    "union": {"training": {"load_best_model_at_end": False}},  # trained on train + validation (UNION)
    "refit": {"training": {"refit_on_validation": True}},  # then anew on train + validation, the best epoch's length
    "refit_last": {"training": {"refit_on_validation": True, "load_best_model_at_end": False}},  # ... every epoch
    # the model stacked with the probe the contenders run ("target: text", C by cross-validated log-loss),
    # the stack's weights fitted on validation (the first pass's model), its members refit on train + validation
    "stack_probe": {"evaluation": {"baselines": [{"use": "embedding_probe", "pair_format": "{pair}: {text}",
                                                  "choose_C": [0.1, 1.0, 10.0, 100.0]}]},
                    "ensemble": {"stack": ["embedding_probe"]}},
}
#: Variants trained on the draw's train and validation examples together (validation then chooses nothing).
UNION = {"union"}
CONTENDERS = ("probe", "setfit", "full", "probe_all", "setfit_all")
RESULTS = bench.ROOT / "benchmarks" / "results" / "fewshot_validation.runs.jsonl"
#: Each run's scores on its scoring rows (bench.save_scores), named by the run's record ("scores_file").
SCORES = bench.ROOT / "benchmarks" / "results" / "fewshot_validation.scores"


def validation_data(name: str, registry) -> bench.DataSet:
    if name.startswith("tweeteval-"):  # one target: drawn from its train.csv rows, scored on those the draw left
        target = name.removeprefix("tweeteval-")
        data = validation_data("tweeteval", registry)
        data.name, data.pool = name, bench.of_target(data.pool, target)
        data.pool_from, data.scoring_from = f"train.csv, target {target}", "the pool rows the draw left"
        return data
    data = bench.load_data(name, registry)
    if name == "tweeteval":
        files = {split: str(bench.TWEETEVAL_DIR / f"{split}.csv") for split in ("train", "validation")}
        data.pool = bench.read_examples(data.table, files["train"], data.labels, registry)
        data.scoring = bench.read_examples(data.table, files["validation"], data.labels, registry)
        data.pool_from, data.scoring_from = "train.csv", "validation.csv"
    return data


def left_over(pool, *drawn):
    """The pool's rows that no drawn split holds (by text and target)."""
    pairs = lambda e: e.pairs or [None] * len(e)  # noqa: E731
    used = {row for e in drawn for row in zip(e.texts, pairs(e))}
    return pool.subset([i for i, row in enumerate(zip(pool.texts, pairs(pool))) if row not in used])


def settings(variant: str) -> str | None:
    """What decides a variant's run besides the draw: its recipe files' content and, for a variant
    of the few-shot recipe, the keys it changes."""
    if variant in CONTENDERS:
        recipe = bench.RECIPES.get(variant)
        return bench.recipe_sha(recipe) if recipe else None
    return bench.settings_sha({"recipe": bench.recipe_sha(bench.RECIPES["fewshot"]), "changes": VARIANTS[variant],
                               **({"union": True} if variant in UNION else {})})


def run(names: list[str], sizes: list[int], draws: int, variants: list[str], log=print) -> None:
    from stancerun import resolve_model

    from stancerun.config import tomlio
    from stancerun.data.rows import concat
    from stancerun.registry.discovery import get_registry

    registry = get_registry()
    keys = {variant: settings(variant) for variant in variants}
    done = {(r["data"], r["k"], r["draw"], r["variant"], r.get("settings")) for r in read()}
    with tempfile.TemporaryDirectory(prefix="fewshot-validation-") as work:
        work = Path(work)
        model_dir = resolve_model(bench.MODEL)
        contexts = {}  # one per variant, made once: the probe's encoder and scoring embeddings are cached in it
        for variant in variants:
            recipes = dict(bench.RECIPES)
            if variant not in CONTENDERS:
                recipes["fewshot"] = work / f"{variant}.toml"
                recipes["fewshot"].write_text(tomlio.dumps({"extends": str(bench.RECIPES["fewshot"]),
                                                            **VARIANTS[variant]}), encoding="utf-8")
            contexts[variant] = bench.Context(model_dir, registry, recipes, None, work, scores=SCORES)
        for name in names:
            data = validation_data(name, registry)
            pool_scoring = data.scoring
            for k in sizes:
                for d in range(draws):
                    train, validation = bench.draw(data.pool, k, 777000 + 1000 * k + d)
                    data.scoring = pool_scoring if name == "tweeteval" else left_over(data.pool, train, validation)
                    for variant in variants:
                        if (name, k, d, variant, keys[variant]) in done:
                            continue
                        started = time.perf_counter()
                        trained_on = concat(train, validation) if variant in UNION else train
                        found = bench.RUNNERS[variant if variant in CONTENDERS else "fewshot"](data, trained_on, validation,
                                                                                                contexts[variant])
                        record = {"data": name, "k": k, "draw": d, "variant": variant, "settings": keys[variant],
                                  "scoring_examples": len(data.scoring), **found,
                                  "wall_s": round(time.perf_counter() - started, 1)}
                        with RESULTS.open("a", encoding="utf-8") as handle:
                            handle.write(json.dumps(record) + "\n")
                        log(f"{name} k={k} draw {d} {variant}: macro-F1 {found[bench.SCORE]:.4f}")


def read() -> list[dict]:
    if not RESULTS.is_file():
        return []
    return [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(reference: str = "recipe") -> str:
    """Mean macro-F1 x 100 per (data, k, variant) over the runs of the current settings, and its mean
    paired difference to ``reference``."""
    scores, current = defaultdict(dict), {variant: settings(variant) for variant in (*VARIANTS, *CONTENDERS)}
    for r in read():
        if r["variant"] not in current or r.get("settings") != current[r["variant"]]:
            continue
        scores[(r["data"], r["k"], r["variant"])][r["draw"]] = 100 * r[bench.SCORE]
    lines = [f"| data | k | variant | draws | macro-F1 | − {reference} (paired) |", "|---|---:|---|---:|---:|---:|"]
    for (name, k, variant), by_draw in sorted(scores.items()):
        base = scores.get((name, k, reference), {})
        common = [d for d in by_draw if d in base]
        gap = f"{np.mean([by_draw[d] - base[d] for d in common]):+.1f} (n={len(common)})" if common and \
            variant != reference else ""
        lines.append(f"| {name} | {k} | {variant} | {len(by_draw)} | {np.mean(list(by_draw.values())):.1f} | {gap} |")
    return "\n".join(lines)


def headline(variants: list[str]) -> str:
    """Each variant of the recipe minus the better of the probe and setfit given the same labels
    (train + validation), per data set and k, paired over draws; a stacked variant's model alone too."""
    current = {variant: settings(variant) for variant in (*VARIANTS, *CONTENDERS)}
    scores = defaultdict(dict)
    for r in read():
        if r["variant"] in current and r.get("settings") == current[r["variant"]]:
            scores[(r["data"], r["k"], r["variant"])][r["draw"]] = r[bench.SCORE]
            if "fine_tuned_" + bench.SCORE in r:
                scores[(r["data"], r["k"], r["variant"] + " (model alone)")][r["draw"]] = r["fine_tuned_" + bench.SCORE]
    lines = ["| data | k | variant | draws | macro-F1 | the better rival | − it [95%] | − each draw's better |",
             "|---|---:|---|---:|---:|---|---:|---:|"]
    cells = sorted({(data, k) for data, k, _ in scores})
    shown = [v for variant in variants for v in (variant, variant + " (model alone)")]
    differences = defaultdict(list)
    for data, k in cells:
        rivals = {c: scores.get((data, k, c), {}) for c in bench.SAME_LABELS}
        for variant in shown:
            found = scores.get((data, k, variant))
            row = bench.versus_best(found, rivals) if found and all(rivals.values()) else None
            if row is None:
                continue
            gap, strict = row["versus_best"], row["versus_each_draws_best"]
            differences[variant] += [100 * v for v in gap["values"]]
            interval = f"[{100 * gap['low']:+.1f}, {100 * gap['high']:+.1f}]" if gap["n"] > 1 else ""
            lines.append(f"| {data} | {k} | {variant} | {gap['n']} | {100 * np.mean([found[d] for d in row['draws']]):.1f} "
                         f"| {row['best']} | {100 * gap['mean']:+.1f} {interval} | {100 * strict['mean']:+.1f} |")
    lines += ["", "| variant | cells x draws | mean − the better rival |", "|---|---:|---:|"]
    lines += [f"| {v} | {len(d)} | {np.mean(d):+.2f} |" for v, d in differences.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", choices=bench.DATA_SETS, default=["tweeteval", "demo"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[16])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, *CONTENDERS], default=["recipe"])
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.summary_only:
        run(args.data, args.sizes, args.draws, args.variants)
    print(summary())
    print()
    print(headline(args.variants if not set(args.variants) <= set(CONTENDERS) else ["recipe"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
