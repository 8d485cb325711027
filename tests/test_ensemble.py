"""[ensemble]: stacking baselines with the fine-tuned model and a decision rule for the headline
metric, fitted on validation, shipped in the run directory and applied by predict and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_experiment

from stancerun.evaluation import ensemble
from stancerun.config.experiment import load_experiment
from stancerun.errors import ConfigError
from stancerun.contracts import EvalPrediction

NAMES = ["against", "none", "favor"]


def favor_against(pred):
    from sklearn.metrics import f1_score

    return {"f1_favor_against": float(f1_score(pred.labels, pred.predictions, labels=[0, 2], average="macro",
                                               zero_division=0))}


def noisy(labels, strength, rng, n_classes=3):
    scores = rng.normal(size=(len(labels), n_classes))
    scores[np.arange(len(labels)), labels] += strength
    return scores


def test_weights_favour_the_informative_member_and_lower_the_log_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    weak, strong = noisy(labels, 0.3, rng), noisy(labels, 2.5, rng)
    weights, bias = ensemble.fit_weights(weak, [strong], labels)
    assert weights[1] > weights[0] >= 0
    stack = ensemble.Stack(["member"], weights, bias, [0.0] * 3)

    def log_loss(scores):
        return -ensemble.log_softmax(scores)[np.arange(len(labels)), labels].mean()

    assert log_loss(stack.combine(weak, [strong])) < log_loss(weak)


def test_a_useless_member_gets_no_weight_to_speak_of():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 600)
    weights, _ = ensemble.fit_weights(noisy(labels, 2.0, rng), [rng.normal(size=(600, 3))], labels)
    assert weights[1] < 0.1 * weights[0]


def test_offsets_move_only_when_the_headline_gains():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 400)
    scores = noisy(labels, 1.5, rng)
    scores[:, 1] += 1.0  # a model that says "none" too often: F1 of favor and against suffer
    before = favor_against(EvalPrediction(scores, labels, NAMES))["f1_favor_against"]
    offsets = ensemble.tune_offsets(scores, labels, NAMES, favor_against, "f1_favor_against")
    after = favor_against(EvalPrediction(scores + offsets, labels, NAMES))["f1_favor_against"]
    assert offsets[0] == 0.0 and offsets[1] < 0 and after > before
    # Already the best it can be: nothing moves.
    perfect = np.eye(3)[labels] * 5
    assert ensemble.tune_offsets(perfect, labels, NAMES, favor_against, "f1_favor_against") == [0.0, 0.0, 0.0]


def test_stack_round_trips_through_its_record():
    stack = ensemble.Stack(["ngram_svm"], [0.8, 0.3], [0.1, -0.2, 0.1], [0.0, -0.3, 0.2])
    again = ensemble.Stack.from_dict(json.loads(json.dumps(stack.to_dict())))
    logits, member = np.random.default_rng(3).normal(size=(5, 3)), np.random.default_rng(4).normal(size=(5, 3))
    assert np.array_equal(stack.combine(logits, [member]), again.combine(logits, [member]))


def test_folding_a_decision_rule_into_the_output_layer_keeps_the_probabilities():
    import torch

    from stancerun.inference.export import fold_scores
    from stancerun.evaluation.stats import softmax

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    inputs = torch.randn(6, 4)
    with torch.no_grad():
        logits = head(inputs).numpy()
    stack = ensemble.Stack([], [0.7], [0.2, -0.1, 0.0], [0.0, -0.4, 0.3])
    expected = softmax(stack.combine(logits, []), 1.3)
    fold_scores(head, 3, 1.3, stack.weights[0], [b + o for b, o in zip(stack.bias, stack.offsets)])
    with torch.no_grad():
        folded = torch.softmax(head(inputs), dim=-1).numpy()
    assert np.allclose(folded, expected, atol=1e-5)


# -- configuration -----------------------------------------------------------------------------
def write(tmp_path, tiny_bert, extra, data='text_pair_column = "target"'):
    return tiny_experiment(tmp_path, tiny_bert, data=data, extra=extra)


def test_headline_picks_the_model_unless_metric_for_best_model_is_given(tmp_path, tiny_bert, stance_data):
    path = write(tmp_path, tiny_bert, '[evaluation]\nheadline = "f1_macro"\n')
    text = path.read_text().replace('metric_for_best_model = "accuracy"\n', "")
    path.write_text(text)
    assert load_experiment(path).config["training"]["metric_for_best_model"] == "f1_macro"
    path.write_text(text.replace("[training]\n", '[training]\nmetric_for_best_model = "accuracy"\n'))
    assert load_experiment(path).config["training"]["metric_for_best_model"] == "accuracy"


@pytest.mark.parametrize("extra, key, words", [
    ('[evaluation]\nbaselines = ["majorty"]\n', "evaluation.baselines[0].use", "majority"),
    ('[evaluation]\nbaselines = [{use = "ngram_svm", C = "big"}]\n', "evaluation.baselines[0].C", "number"),
    ('[ensemble]\nstack = ["ngram_sv"]\n', "ensemble.stack[0]", "ngram_svm"),
    ('[ensemble]\ndecision = "best"\n', "ensemble.decision", "headline"),
    ('[evaluation]\nheadline = "loss"\n', "evaluation.headline", "not the loss"),
])
def test_bad_baseline_and_ensemble_settings_are_named(tmp_path, tiny_bert, stance_data, extra, key, words):
    with pytest.raises(ConfigError) as error:
        load_experiment(write(tmp_path, tiny_bert, extra))
    assert any(p.key == key and words in f"{p.message} {p.hint}" for p in error.value.problems), error.value.problems


def test_baselines_take_options_and_keep_their_short_form(tmp_path, tiny_bert, stance_data):
    path = write(tmp_path, tiny_bert, '[evaluation]\nbaselines = ["majority", {use = "ngram_svm", C = 0.5}]\n')
    baselines = load_experiment(path).config["evaluation"]["baselines"]
    assert baselines[0] == "majority" and baselines[1]["use"] == "ngram_svm" and baselines[1]["C"] == 0.5


# -- a run that ships a stack -------------------------------------------------------------------
EXTRA = """[evaluation]
headline = "f1_macro"
bootstrap_resamples = 200
plots = false

[ensemble]
stack = ["ngram_svm"]
decision = "headline"
"""


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory, tiny_bert):
    from conftest import stance_rows, write_csv

    from stancerun.engine.run import run_experiment

    folder = tmp_path_factory.mktemp("stacked")
    write_csv(folder / "data" / "train.csv", stance_rows(90, seed=1))
    write_csv(folder / "data" / "test.csv", stance_rows(30, seed=2))
    path = write(folder, tiny_bert, EXTRA)
    return run_experiment(load_experiment(path), output_dir=str(folder / "run"), quiet=True)


def test_a_stacked_run_reports_what_ships_beside_the_model_alone(stacked_run):
    r = json.loads((stacked_run / "results.json").read_text())
    e = r["ensemble"]
    assert e["members"] == ["ngram_svm"] and len(e["weights"]) == 2 and e["decision"] == "headline"
    assert set(e["fine_tuned"]) == {"validation", "test"}
    assert set(r["baselines"]) == {"majority", "tfidf", "ngram_svm"}
    assert r["verdict"]["metric"] == "f1_macro" and r["verdict"]["baseline"] in r["baselines"]
    assert {"difference", "low", "high", "significant"} <= set(r["verdict"]["test"])
    report = (stacked_run / "report.md").read_text()
    for text in ("**Verdict:**", "**What ships:**", "fine-tuned alone", "shipped (stack)", "ngram_svm scores"):
        assert text in report
    info = json.loads((stacked_run / "model" / "stancerun.json").read_text())
    assert info["ensemble"]["records"]["ngram_svm"]["plugin"] == "baselines"
    assert not list((stacked_run / "model").rglob("*.pkl"))


def test_predict_and_evaluate_apply_the_whole_stack(stacked_run, tmp_path):
    import csv

    from stancerun.inference.evaluate import evaluate_run
    from stancerun.inference.predict import predict

    with (stacked_run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    predicted = predict(stacked_run, [r["text"] for r in rows], [r["target"] for r in rows], batch_size=7)
    for row, got in zip(rows, predicted):
        assert got["label"] == row["prediction"]
        for name in ("support", "neutral", "oppose"):
            assert got["probabilities"][name] == pytest.approx(float(row[f"prob_{name}"]), abs=1e-5)
    out = evaluate_run(stacked_run, stacked_run.parent / "data" / "test.csv")
    results = json.loads((out / "results.json").read_text())
    test = json.loads((stacked_run / "results.json").read_text())["test"]
    assert results["metrics"]["f1_macro"] == pytest.approx(test["f1_macro"])


def test_export_refuses_a_stack_and_writes_the_transformer_alone_on_request(stacked_run, tmp_path):
    from stancerun.errors import UsageError
    from stancerun.inference.export import export

    with pytest.raises(UsageError, match="--fine-tuned-only"):
        export(stacked_run, tmp_path / "out", merge=True)
    out = export(stacked_run, tmp_path / "alone", merge=True, fine_tuned_only=True)
    assert "ensemble" not in json.loads((out / "stancerun.json").read_text())
