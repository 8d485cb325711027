"""Evaluation that tells the truth: baselines, intervals, calibration, error analysis, data
checks, cross-validation, seeds, evaluate and compare."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import stance_rows, tiny_experiment, write_csv
from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.data.checks import check, normalise
from stancerun.data.rows import Examples, Splits
from stancerun.errors import UsageError
from stancerun.studies.repeats import fold_splits, run_repeated, stratified_folds
from stancerun.engine.run import run_experiment


def test_stratified_folds_are_disjoint_complete_and_stratified():
    labels = [0] * 40 + [1] * 25 + [2] * 15
    folds = stratified_folds(labels, 5, seed=3)
    flat = sorted(i for fold in folds for i in fold)
    assert flat == list(range(80))  # every example once: disjoint and complete
    for fold in folds:
        counts = np.bincount([labels[i] for i in fold], minlength=3)
        assert counts.tolist() == [8, 5, 3]  # each label's share in every fold
    with pytest.raises(UsageError, match="rarest label"):
        stratified_folds([0] * 10 + [1] * 2, 5, seed=0)


def test_fold_splits_pool_train_and_carved_validation():
    train = Examples([f"t{i}" for i in range(8)], [0, 1] * 4)
    validation = Examples(["v0", "v1"], [0, 1])
    test = Examples(["x"], [0])
    splits = Splits(train, validation, ["a", "b"], test, [], validation_from_split=True)
    folds = fold_splits(splits, 2, seed=0)
    assert [len(f.train) + len(f.validation) for f in folds] == [10, 10]
    assert sorted(folds[0].validation.texts + folds[1].validation.texts) == sorted(train.texts + validation.texts)
    assert all(f.test is test for f in folds)


def leaky_splits(on_train: list[str], on_eval: list[str]) -> Splits:
    return Splits(Examples(on_train, [0] * len(on_train)), Examples(on_eval, [0] * len(on_eval)), ["x", "y"])


def test_leakage_is_found_exact_and_normalised():
    splits = leaky_splits(["Great plan!", "other", "Same text"], ["great   PLAN", "Same text", "new"])
    report = check(splits, "warn")
    leak = report.leaks[0]
    assert (leak.split, leak.exact, leak.normalised) == ("validation", 1, 2)
    assert "2 validation example(s) also appear in train" in report.findings()[0]
    assert normalise("Café, déjà-vu!") == "cafe deja vu"


def test_leakage_drop_removes_training_copies_and_error_stops():
    splits = leaky_splits(["Great plan!", "other", "Same text"], ["great   PLAN", "Same text", "new"])
    report = check(splits, "drop")
    assert report.dropped == 2 and splits.train.texts == ["other"] and report.distribution["train"]["x"] == 1
    with pytest.raises(UsageError, match="on_leakage"):
        check(leaky_splits(["a b"], ["A b."]), "error")


def test_planted_duplicate_is_reported_and_error_exits_2_before_training(tmp_path, tiny_bert, stance_data, capsys):
    rows = stance_rows(90, seed=1)
    planted = {"text": "a planted duplicate about the tax", "target": "tax", "label": "support"}
    write_csv(stance_data["train"], rows + [planted])
    write_csv(tmp_path / "data" / "val.csv", stance_rows(12, seed=5) + [dict(planted, text="A planted duplicate, about the TAX!")])
    path = tiny_experiment(tmp_path, tiny_bert, data='validation = "data/val.csv"\non_leakage = "error"')
    assert main(["run", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "on_leakage" in err and "1 validation example(s) also appear in train" in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing half-written
    # warn: the run goes on and the finding lands in results.json and report.md
    run = run_experiment(load_experiment(path, ['data.on_leakage="warn"', "training.num_train_epochs=1"]),
                         output_dir=str(tmp_path / "run2"))
    results = json.loads((run / "results.json").read_text())
    assert results["data"]["leaks"][0]["normalised"] == 1
    assert "Leakage" in (run / "report.md").read_text()


def test_run_reports_baselines_intervals_groups_and_errors(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, data='text_pair_column = "target"',
                           extra='[evaluation]\ncalibrate = true\nbootstrap_resamples = 300\n')
    run = run_experiment(load_experiment(path), output_dir=str(tmp_path / "run"))
    r = json.loads((run / "results.json").read_text())
    assert set(r["baselines"]) == {"majority", "tfidf", "ngram_svm"}
    # Per target: in the tiny data each target has one label, so the target alone gives it away.
    assert r["baselines"]["majority"]["accuracy"] == pytest.approx(1.0)
    assert r["baselines"]["tfidf"]["accuracy"] > 0.8  # the tiny data's words give the label away
    assert r["baselines"]["ngram_svm"]["accuracy"] > 0.8
    assert r["verdict"]["baseline"] == "majority" and "test" in r["verdict"]  # the strongest one here
    for name in ("final", "baseline", "majority", "tfidf", "ngram_svm", "test"):
        for interval in r["intervals"][name].values():
            assert interval["low"] <= interval["value"] <= interval["high"]
    assert set(r["analysis"]["by_group"]) == {"tax", "ban", "park"}
    assert sum(g["n"] for g in r["analysis"]["by_group"].values()) == 18
    cal = r["calibration"]
    assert cal["temperature"] > 0 and cal["ece_after"] is not None and "test_ece_after" in cal
    wrong = [json.loads(line) for line in (run / "misclassified.jsonl").read_text().splitlines()]
    assert all(w["label"] != w["prediction"] for w in wrong)
    assert [w["confidence"] for w in wrong] == sorted((w["confidence"] for w in wrong), reverse=True)
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["temperature"] == pytest.approx(cal["temperature"])
    report = (run / "report.md").read_text()
    for text in ("**Verdict:**", "Against baselines", "tfidf", "majority", "ngram_svm", "Per group (validation)", "Calibration",
                 "plots/reliability.png"):
        assert text in report


def test_predict_applies_the_saved_temperature(tmp_path, tiny_bert, stance_data):
    from stancerun.inference.predict import predict

    path = tiny_experiment(tmp_path, tiny_bert, extra="[evaluation]\ncalibrate = true\nbootstrap_resamples = 0\n")
    run = run_experiment(load_experiment(path), output_dir=str(tmp_path / "run"))
    import csv

    saved = list(csv.DictReader((run / "predictions.csv").open()))
    rows = predict(run, [r["text"] for r in saved], None, 8)
    got = np.array([[r["probabilities"][n] for n in ("support", "neutral", "oppose")] for r in rows])
    want = np.array([[float(r[f"prob_{n}"]) for n in ("support", "neutral", "oppose")] for r in saved])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_cross_validation_runs_k_folds_and_aggregates(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra="[evaluation]\ncv_folds = 3\nbootstrap_resamples = 0\nplots = false\n")
    experiment = load_experiment(path, ["training.num_train_epochs=1", "training.save_strategy=no"])
    parent = run_repeated(experiment, output_dir=str(tmp_path / "cv"))
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["mode"] == "cv" and summary["runs"] == ["fold-1", "fold-2", "fold-3"]
    validation_texts = []
    for fold in summary["runs"]:
        results = json.loads((parent / fold / "results.json").read_text())
        assert results["train"]["train_samples"] == 60 and results["train"]["eval_samples"] == 30
        validation_texts += [line.split(",")[0] for line in (parent / fold / "predictions.csv").read_text().splitlines()[1:]]
    assert len(validation_texts) == 90  # every training example held out exactly once
    acc = summary["final"]["accuracy"]
    assert acc["n"] == 3 and acc["low"] <= acc["mean"] <= acc["high"] and len(acc["values"]) == 3
    assert "3-fold cross-validation" in (parent / "report.md").read_text()


def test_seeds_repeat_the_run(tmp_path, tiny_bert, stance_data):
    path = tiny_experiment(tmp_path, tiny_bert, extra="[evaluation]\nseeds = [1, 2]\nbootstrap_resamples = 0\nplots = false\n")
    parent = run_repeated(load_experiment(path, ["training.num_train_epochs=1", "training.save_strategy=no"]),
                          output_dir=str(tmp_path / "seeds"))
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["runs"] == ["seed-1", "seed-2"]
    from stancerun.config import tomlio

    seeds = [tomlio.loads((parent / d / "config.toml").read_text())["seed"] for d in summary["runs"]]
    assert seeds == [1, 2]


def test_evaluate_and_compare_commands(tmp_path, tiny_bert, stance_data, capsys):
    a = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_bert, "full")), output_dir=str(tmp_path / "a"))
    b = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_bert, "frozen")), output_dir=str(tmp_path / "b"))
    assert main(["evaluate", str(a), "--data", str(stance_data["test"])]) == 0
    out = next((a / "evaluations").iterdir())
    r = json.loads((out / "results.json").read_text())
    assert r["examples"] == 30 and {"accuracy", "f1_macro"} <= set(r["metrics"])
    assert {"report.md", "predictions.csv", "misclassified.jsonl"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["metric"] == "accuracy" and len(board["rows"]) == 2
    assert board["rows"][0]["vs_leader"] is None
    second = board["rows"][1]["vs_leader"]
    assert {"difference", "low", "high", "p", "significant"} <= set(second)
    assert main(["compare", str(a), str(tmp_path)]) == 2
