"""benchmarks/fewshot.py is not run here (hours on ../shared data), but its parts must be right: the
summary and the paired differences, the cache that lets it run in pieces, and contenders that train
on the same draws, shown on a tiny model and tiny data."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import stance_rows, tiny_experiment, write_csv

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LABELS = ["support", "neutral", "oppose"]


@pytest.fixture(scope="module")
def fewshot():
    spec = importlib.util.spec_from_file_location("benchmarks_fewshot", BENCHMARKS / "fewshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_fewshot"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def record(data, contender, k, draw, score, **extra):
    return {"data": data, "contender": contender, "k": k, "draw": draw, "f1_macro": score, "train_s": 1.0,
            "wall_s": 2.0, **extra}


def test_summary_scores_and_paired_differences(fewshot):
    new = [0.60, 0.70, 0.65]
    probe = [0.50, 0.66, 0.55]
    records = ([record("demo", "fewshot", 8, d, v) for d, v in enumerate(new)]
               + [record("demo", "probe", 8, d, v) for d, v in enumerate(probe)]
               + [record("demo", "setfit", 8, d, v) for d, v in [(0, 0.5), (2, 0.6)]]  # draw 1 missing
               + [record("demo", "probe", 8, 7, 0.1)])  # a draw beyond the asked ones is left out
    summary = fewshot.summarise(records, ["demo"], [8], 3, contenders=("probe", "setfit", "fewshot"))
    cell = summary["cells"]["demo"]["8"]
    assert cell["probe"]["n"] == 3 and cell["probe"]["mean"] == pytest.approx(sum(probe) / 3)
    assert cell["probe"]["low"] < cell["probe"]["mean"] < cell["probe"]["high"]
    assert cell["setfit"]["draws"] == [0, 2] and cell["probe"]["wall_s"] == 2.0
    gap = summary["differences"]["demo"]["8"]
    diffs = [a - b for a, b in zip(new, probe)]
    assert gap["probe"]["mean"] == pytest.approx(sum(diffs) / 3) and gap["probe"]["draws"] == [0, 1, 2]
    # paired on the draws both have, not on the cells' means
    assert gap["setfit"]["draws"] == [0, 2] and gap["setfit"]["mean"] == pytest.approx(((0.6 - 0.5) + (0.65 - 0.6)) / 2)
    assert summary["incomplete"] == ["demo k=8 setfit: 2 of 3 draws"]
    text = fewshot.tables(summary)
    assert "(n=2)" in text and "fewshot − setfit" in text and "demo k=8 setfit: 2 of 3 draws" in text
    # one draw: no interval, and the JSON says null rather than NaN
    one = fewshot.summarise(records[:1], ["demo"], [8], 1, contenders=("probe", "fewshot"))
    assert math.isnan(one["cells"]["demo"]["8"]["fewshot"]["low"]) and one["cells"]["demo"]["8"]["probe"] is None
    assert one["differences"]["demo"]["8"]["probe"] is None
    assert "NaN" not in json.dumps(fewshot.finite(one))


def test_macro_f1_counts_every_label_and_reads_names(fewshot):
    # a label never predicted still counts (F1 0), as stancerun's f1_macro; ids and names agree
    assert fewshot.macro_f1([0, 1, 2], [0, 1, 1], range(3)) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert fewshot.macro_f1(["a", "b", "c"], ["a", "b", "b"], ["a", "b", "c"]) == pytest.approx((1 + 2 / 3) / 3)


def test_recipe_hash_follows_extends(fewshot, tmp_path):
    base, child = tmp_path / "base.toml", tmp_path / "child.toml"
    base.write_text("seed = 1\n")
    child.write_text('extends = "base.toml"\n')
    before = fewshot.recipe_sha(child)
    base.write_text("seed = 2\n")
    assert fewshot.recipe_sha(child) != before


@pytest.fixture
def tiny_data(fewshot, tmp_path):
    """A pool and a scoring split in memory, with the CSV files a stancerun contender's [data] names."""
    from stancerun.data.rows import Examples

    def examples(rows):
        return Examples([r["text"] for r in rows], [LABELS.index(r["label"]) for r in rows], [r["target"] for r in rows])

    pool, scoring = stance_rows(60, seed=1), stance_rows(30, seed=2)
    files = {"train": str(write_csv(tmp_path / "data" / "train.csv", pool)),
             "test": str(write_csv(tmp_path / "data" / "test.csv", scoring))}
    return fewshot.DataSet("tiny", examples(pool), examples(scoring), LABELS, fewshot.csv_table(LABELS, **files),
                           "train.csv", "test.csv", list(files.values()))


def test_contenders_share_draws_and_the_cache_skips_done_runs(fewshot, tmp_path, tiny_bert, tiny_data):
    from stancerun.registry.discovery import get_registry

    recipe = tiny_experiment(tmp_path, tiny_bert, adapter="full")
    ctx = fewshot.Context(str(tiny_bert), get_registry(), {"full": recipe}, epochs=2, work=tmp_path,
                          scores=tmp_path / "scores")
    cache, lines = tmp_path / "out" / "runs.jsonl", []
    asked = ("probe", "probe_all", "full")
    records, failures = fewshot.benchmark([tiny_data], [2], 1, ctx, cache, run=asked, log=lines.append)
    # setfit and setfit_all: not asked; lora, fewshot, full_all: no recipe here
    assert failures == [] and lines[0] == "5 runs on this grid, 2 cached or not asked for; 3 to run"
    by = {r["contender"]: r for r in records}
    assert set(by) == set(asked) and by["probe"]["draw_sha"] == by["full"]["draw_sha"] == by["probe_all"]["draw_sha"]
    assert by["probe_all"]["C"] in fewshot.PROBE_C and "validation_f1_macro" not in by["probe_all"]
    assert by["probe"]["seed"] == fewshot.draw_seed(2, 0) and by["full"]["train_examples"] == 6
    assert all(0 <= r["f1_macro"] <= 1 and r["scoring_examples"] == 30 for r in records)
    assert by["full"]["epochs"] == 2 and by["probe"]["C"] in fewshot.PROBE_C
    assert len(cache.read_text().splitlines()) == 3
    import numpy as np

    kept = np.load(tmp_path / "scores" / by["full"]["scores_file"])  # its scores, to combine with others later
    assert kept["scoring_logits"].shape == (30, 3) and kept["validation_probs"].shape == (6, 3)
    predicted = kept["scoring_logits"].argmax(1)
    assert fewshot.macro_f1(tiny_data.scoring.labels, predicted, range(3)) == pytest.approx(by["full"]["f1_macro"])
    assert np.load(tmp_path / "scores" / by["probe_all"]["scores_file"])["scoring_probs"].shape == (30, 3)

    lines.clear()  # a rerun runs nothing and finds the same records
    again, _ = fewshot.benchmark([tiny_data], [2], 1, ctx, cache, run=asked, log=lines.append)
    assert lines == ["5 runs on this grid, 5 cached or not asked for; 0 to run"] and again == records

    with recipe.open("a") as handle:  # a changed recipe is a new run; the probe's result still stands
        handle.write("# changed\n")
    changed, _ = fewshot.benchmark([tiny_data], [2], 1, ctx, cache, run=(), log=lines.append)
    assert [r["contender"] for r in changed] == ["probe", "probe_all"]
    summary = fewshot.summarise(records, ["tiny"], [2], 1, contenders=("probe", "full"), new="full")
    assert summary["differences"]["tiny"]["2"]["probe"]["mean"] == pytest.approx(by["full"]["f1_macro"] -
                                                                                 by["probe"]["f1_macro"])


def test_experiment_keeps_only_stacked_baselines_and_our_data(fewshot, tmp_path, tiny_bert, tiny_data):
    from stancerun.registry.discovery import get_registry

    extra = '[evaluation]\nbaselines = ["majority", "ngram_svm"]\n\n[ensemble]\nstack = ["ngram_svm"]\n'
    recipe = tiny_experiment(tmp_path, tiny_bert, adapter="full", extra=extra)
    folder = tmp_path / "work"
    folder.mkdir()
    experiment = fewshot.experiment_for(recipe, tiny_data.table, {"training": fewshot.TRAINED}, folder, get_registry())
    config = experiment.config
    assert [b if isinstance(b, str) else b["use"] for b in config["evaluation"]["baselines"]] == ["ngram_svm"]
    assert config["evaluation"]["plots"] is False and config["ensemble"]["stack"] == ["ngram_svm"]
    assert config["training"]["num_train_epochs"] == 20 and config["training"]["metric_for_best_model"] == "f1_macro"
    assert config["data"]["text_pair_column"] == "target" and config["data"]["test"] == tiny_data.table["test"]
    assert config["data"]["validation"] is None


def test_setfit_maps_its_predictions_to_our_labels(fewshot, tmp_path, tiny_bert, tiny_data):
    pytest.importorskip("setfit")
    from stancerun.registry.discovery import get_registry

    ctx = fewshot.Context(str(tiny_bert), get_registry(), {}, work=tmp_path)
    train, validation = fewshot.draw(tiny_data.pool, 2, 0)
    found = fewshot.setfit(tiny_data, train, validation, ctx)
    assert 0 <= found["f1_macro"] <= 1 and found["train_s"] > 0


def test_script_starts():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "fewshot.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout and "--test-limit" in done.stdout, done.stderr


@pytest.fixture(scope="module")
def validation_lab(fewshot):
    spec = importlib.util.spec_from_file_location("benchmarks_fewshot_validation", BENCHMARKS / "fewshot_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_validation_lab_scores_on_rows_no_draw_holds(validation_lab, tmp_path, monkeypatch):
    from stancerun.data.rows import Examples

    pool = Examples(["a", "b", "c", "a", "d"], [0, 1, 0, 1, 2], ["x", "x", "x", "y", "x"])
    train, validation = pool.subset([0]), pool.subset([2])
    left = validation_lab.left_over(pool, train, validation)
    assert list(zip(left.texts, left.pairs)) == [("b", "x"), ("a", "y"), ("d", "x")]  # ("a", "y") is another row

    monkeypatch.setattr(validation_lab, "RESULTS", tmp_path / "runs.jsonl")
    rows = [{"data": "demo", "k": 8, "draw": d, "variant": v, "f1_macro": s, "settings": validation_lab.settings(v)}
            for v, scores in {"recipe": [0.5, 0.7], "sep": [0.6, 0.9]}.items() for d, s in enumerate(scores)]
    stale = {**rows[0], "f1_macro": 0.1, "draw": 2, "settings": "an older recipe"}  # not the current settings: left out
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, stale]))
    table = validation_lab.summary()
    assert "| demo | 8 | sep | 2 | 75.0 | +15.0 (n=2) |" in table
    assert "| demo | 8 | recipe | 2 | 60.0 |  |" in table
    assert validation_lab.settings("sep") != validation_lab.settings("recipe")


def test_the_headline_is_the_recipe_against_the_better_simple_model_given_the_same_labels(fewshot):
    new = [0.60, 0.70, 0.65]
    probe_all, setfit_all = [0.62, 0.60, 0.58], [0.50, 0.72, 0.55]  # the probe's mean is higher: it is "the better"
    records = ([record("demo", "fewshot", 8, d, v) for d, v in enumerate(new)]
               + [record("demo", "probe_all", 8, d, v) for d, v in enumerate(probe_all)]
               + [record("demo", "setfit_all", 8, d, v) for d, v in enumerate(setfit_all)])
    summary = fewshot.summarise(records, ["demo"], [8], 3, contenders=("probe_all", "setfit_all", "fewshot"))
    row = summary["headline"]["demo"]["8"]
    assert row["best"] == "probe_all" and row["draws"] == [0, 1, 2]
    assert row["versus_best"]["values"] == pytest.approx([a - b for a, b in zip(new, probe_all)])
    each = [a - max(b, c) for a, b, c in zip(new, probe_all, setfit_all)]
    assert row["versus_each_draws_best"]["values"] == pytest.approx(each)
    assert "| demo | 8 | 3 | probe_all | +5.0 [" in fewshot.tables(summary)
    assert fewshot.versus_best({0: 0.5}, {"probe_all": {1: 0.4}, "setfit_all": {1: 0.3}}) is None  # no common draw


def test_each_tweeteval_target_is_a_data_set_of_its_own(fewshot, tmp_path):
    from stancerun.registry.discovery import get_registry

    rows = [{"text": f"tweet {i} about {t}", "target": t, "label": ["against", "none", "favor"][i % 3]}
            for t in ("abortion", "atheism") for i in range(9)]
    for split in ("train", "validation", "test"):
        write_csv(tmp_path / f"{split}.csv", [{**r, "text": f"{split} {r['text']}"} for r in rows])
    data = fewshot.load_data("tweeteval-atheism", get_registry(), tweeteval_dir=tmp_path)
    assert data.name == "tweeteval-atheism" and set(data.pool.pairs) == set(data.scoring.pairs) == {"atheism"}
    assert len(data.pool) == 18 and len(data.scoring) == 9  # train + validation rows of the target; its test rows
    assert "target atheism" in data.scoring_from and {"tweeteval-abortion", "demo"} <= set(fewshot.DATA_SETS)
