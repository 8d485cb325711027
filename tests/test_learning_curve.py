"""[evaluation] learning_curve: stratified draws, the scoring split, config checks, the
"still rising?" sentence, and one end-to-end run through the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import stance_rows, tiny_experiment, write_csv

from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.studies.curve import (
    check_sizes,
    draw,
    draw_indices,
    draw_seed,
    plan,
    sources,
    trend,
)
from stancerun.data.rows import Examples, Splits
from stancerun.errors import UsageError

FAST = "bootstrap_resamples = 0\nbaselines = [\"majority\", \"tfidf\"]\n"
QUICK = ["training.num_train_epochs=1", "training.save_strategy=no"]


def pool_of(counts: list[int]) -> Examples:
    labels = [label for label, n in enumerate(counts) for _ in range(n)]
    return Examples([f"t{i}" for i in range(len(labels))], labels)


def test_draws_are_stratified_disjoint_deterministic_and_differ_per_repeat():
    pool = pool_of([20, 12, 9])
    train, validation = draw_indices(pool.labels, 4, seed=11)
    assert not set(train) & set(validation)
    for indices in (train, validation):
        assert Counter(pool.labels[i] for i in indices) == {0: 4, 1: 4, 2: 4}
    assert draw_indices(pool.labels, 4, seed=11) == (train, validation)
    a, b = draw(pool, 4, draw_seed(7, 4, 1)), draw(pool, 4, draw_seed(7, 4, 1))
    assert a[0].texts == b[0].texts and a[1].texts == b[1].texts and a[0].labels == b[0].labels
    # Another repeat, size or experiment seed: another draw.
    others = [draw(pool, 4, draw_seed(*key))[0].texts for key in ((7, 4, 2), (7, 8, 1), (8, 4, 1))]
    assert all(texts != a[0].texts for texts in others)
    assert draw_seed(7, 4, 1) == draw_seed(7, 4, 1)  # no hash(): stable across processes


def test_a_size_the_data_cannot_supply_names_size_label_and_count():
    pool = pool_of([20, 12, 9])
    check_sizes(pool, ["a", "b", "c"], [2, 4])
    with pytest.raises(UsageError) as error:
        check_sizes(pool, ["a", "b", "c"], [2, 5, 8], "the training split")
    message = str(error.value)
    assert "evaluation.learning_curve" in message and "5 examples per class needs 10" in message
    assert "'c' has 9" in message and "'b'" not in message and "largest size these data allow is 4" in message
    with pytest.raises(UsageError, match="'c' has 0"):
        check_sizes(pool_of([4, 4]), ["a", "b", "c"], [1])
    with pytest.raises(UsageError, match="learning_curve"):
        draw(pool, 5, seed=0)


def test_config_checks_exit_2(tmp_path, capsys):
    path = tmp_path / "x.toml"
    path.write_text('[data]\nuse = "inline"\ntrain = [{text = "a", label = "x"}]\n'
                    "[evaluation]\nlearning_curve = [8, 0]\nrepeats = 0\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "evaluation.learning_curve[1]: expected an integer >= 1" in err and "evaluation.repeats" in err
    path.write_text(path.read_text().replace("[8, 0]", "[16, 8, 8]").replace("repeats = 0", "seeds = [1, 2]"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "increasing order, each once" in err and "not both" in err


def test_too_large_a_size_stops_validate_and_run_before_anything_is_written(tmp_path, tiny_bert, stance_data, capsys):
    from stancerun.studies.curve import run_curve

    path = tiny_experiment(tmp_path, tiny_bert, extra="[evaluation]\nlearning_curve = [4, 16]\nrepeats = 2\n")
    assert main(["validate", str(path)]) == 2
    assert "16 examples per class needs 32" in capsys.readouterr().err  # 30 of each label in the tiny data
    assert main(["run", str(path), "--output-dir", str(tmp_path / "cli")]) == 2
    with pytest.raises(UsageError, match="largest size these data allow is 15"):
        run_curve(load_experiment(path), output_dir=str(tmp_path / "direct"))
    assert not (tmp_path / "cli").exists() and not (tmp_path / "direct").exists()


def test_without_a_test_split_the_validation_split_scores_and_is_never_drawn(tmp_path, tiny_bert):
    write_csv(tmp_path / "data" / "train.csv", stance_rows(60, seed=1))
    write_csv(tmp_path / "data" / "val.csv", [dict(r, text=f"{r['text']} val{i}") for i, r in enumerate(stance_rows(15, 5))])
    path = tiny_experiment(tmp_path, tiny_bert, extra="[evaluation]\nlearning_curve = [3, 6]\nrepeats = 2\n")
    path.write_text(path.read_text().replace('test = "data/test.csv"', 'validation = "data/val.csv"'))
    experiment = load_experiment(path)
    from stancerun.config.experiment import build
    from stancerun.registry.discovery import get_registry

    splits = build(get_registry(), "datasets", experiment.config["data"]).load()
    src, children = plan(experiment, splits)
    assert src.split == "validation" and src.scoring is splits.validation and src.pool is splits.train
    assert [name for name, *_ in children] == ["k3-r1", "k3-r2", "k6-r1", "k6-r2"]
    validation = set(splits.validation.texts)
    for _, size, repeat, child, data in children:
        assert data.test is splits.validation and not data.validation_from_split
        assert not (set(data.train.texts) | set(data.validation.texts)) & validation
        assert len(data.train) == len(data.validation) == 3 * size
        assert child.config["seed"] == 7 + repeat and child.config["evaluation"]["learning_curve"] == []
    # A carved validation split is the scoring split in the same way, and the pool is what is left of train.
    carved = Splits(pool_of([10, 10]), pool_of([3, 3]), ["a", "b"], None, [], validation_from_split=True)
    assert sources(carved).scoring is carved.validation and sources(carved).pool is carved.train
    # With a test split, a carved validation split goes back into the pool.
    with_test = Splits(pool_of([10, 10]), pool_of([3, 3]), ["a", "b"], pool_of([2, 2]), [], validation_from_split=True)
    assert sources(with_test).split == "test" and len(sources(with_test).pool) == 26


def test_trend_says_rising_levelled_or_cannot_tell():
    rising = trend({32: [0.70, 0.71, 0.72, 0.69, 0.70], 64: [0.74, 0.74, 0.76, 0.72, 0.73]}, "f1_macro")
    assert rising["rising"] is True and (rising["from"], rising["to"]) == (32, 64)
    assert rising["difference"]["mean"] == pytest.approx(0.034)
    assert rising["sentence"].startswith("From 32 to 64 examples per class the model gained +3.4 points of f1_macro (95% CI [+")
    assert "still rising" in rising["sentence"] and "likely worth it" in rising["sentence"]

    level = trend({16: [0.70, 0.72, 0.69, 0.71, 0.70], 32: [0.71, 0.70, 0.70, 0.72, 0.70]}, "accuracy")
    assert level["rising"] is None and "within the noise of 5 repeats" in level["sentence"]
    assert "may have levelled off, or still be improving by as much as +" in level["sentence"]
    assert "more repeats would tell" in level["sentence"]

    flat = trend({8: [0.5, 0.6], 16: [0.5, 0.6]}, "accuracy")
    assert flat["rising"] is False and "the curve is flat here" in flat["sentence"]

    fell = trend({8: [0.80, 0.81, 0.82], 16: [0.70, 0.70, 0.71]}, "accuracy")
    assert fell["rising"] is False and "changed by -10.7 points" in fell["sentence"] and "fell" in fell["sentence"]

    lower_is_better = trend({8: [3.0, 3.2, 3.1], 16: [2.0, 2.1, 2.2]}, "mae")
    assert lower_is_better["rising"] is True and "changed by -1" in lower_is_better["sentence"]

    one_size = trend({8: [0.7, 0.8]}, "accuracy")
    assert one_size["rising"] is None and "one size" in one_size["sentence"]
    one_repeat = trend({8: [0.70], 16: [0.75]}, "accuracy")
    assert one_repeat["rising"] is None and "+5.0 points" in one_repeat["sentence"]
    assert "one repeat" in one_repeat["sentence"] and "evaluation.repeats" in one_repeat["sentence"]


def test_learning_curve_end_to_end_through_the_cli(tmp_path, tiny_bert, stance_data, capsys):
    path = tiny_experiment(tmp_path, tiny_bert, extra=f"[evaluation]\nlearning_curve = [2, 4]\nrepeats = 2\n{FAST}")
    overrides = [a for o in QUICK for a in ("--set", o)]
    assert main(["run", str(path), "--output-dir", str(tmp_path / "curve"), *overrides]) == 0
    out = capsys.readouterr().out
    parent = tmp_path / "curve"
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["mode"] == "learning_curve" and summary["metric"] == "accuracy" and summary["split"] == "test"
    assert summary["sizes"] == [2, 4] and summary["repeats"] == 2 and summary["scored_examples"] == 30
    assert summary["pool"]["examples"] == 90  # train plus the carved validation split
    assert summary["runs"] == ["k2-r1", "k2-r2", "k4-r1", "k4-r2"]
    assert summary["baselines"] == ["majority", "tfidf"]
    for row in summary["curve"]:
        assert row["train_examples"] == 3 * row["size"] and row["model"]["n"] == 2
        assert set(row["baselines"]) == {"majority", "tfidf"}
        agg = row["model"]
        assert agg["low"] <= agg["mean"] <= agg["high"]
    for name in summary["runs"]:
        results = json.loads((parent / name / "results.json").read_text())
        size = int(name[1:].split("-")[0])
        assert results["train"]["train_samples"] == results["train"]["eval_samples"] == 3 * size
        assert results["test"]["accuracy"] in summary["curve"][[2, 4].index(size)]["model"]["values"]
    assert summary["trend"]["rising"] in (True, False) and summary["trend"]["sentence"].startswith("From 2 to 4")
    report = (parent / "report.md").read_text()
    assert report.count("| examples per class |") == 1 and "| 4 | 12 | 2 |" in report
    assert summary["trend"]["sentence"] in report and "](plots/learning_curve.png)" in report
    assert (parent / "plots" / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    assert "k4-r2 (4/4)" in out and "learning curve: accuracy on the test split" in out
    # compare treats a curve's parent as it treats a cross-validation parent: a clear message, exit 2.
    assert main(["compare", str(parent)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err
    assert main(["compare", str(parent / "k2-r1"), str(parent / "k4-r1")]) == 0


def test_a_single_size_without_a_test_split_scores_validation_and_cannot_tell(tmp_path, tiny_bert, stance_data):
    from stancerun.studies.curve import run_curve

    path = tiny_experiment(tmp_path, tiny_bert, extra=f"[evaluation]\nlearning_curve = [3]\nrepeats = 1\nplots = false\n{FAST}")
    path.write_text(path.read_text().replace('test = "data/test.csv"\n', ""))
    parent = run_curve(load_experiment(path, QUICK), output_dir=str(tmp_path / "curve"))
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["split"] == "validation" and summary["scored_examples"] == 18  # 20% of 90, carved
    assert summary["pool"]["examples"] == 72 and summary["trend"]["rising"] is None
    assert "plots" not in summary and not (parent / "plots").exists()
    assert "one size" in (parent / "report.md").read_text()
