"""[training] refit_on_validation: the validation figures stay the first pass's, and the model that
ships (and is scored on test) is trained anew on train + validation for the chosen epochs."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_experiment
from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.engine.refit import kept_epochs, second_pass
from stancerun.engine.run import run_experiment


def results_of(run) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_refit_ships_a_model_trained_on_train_and_validation(tmp_path, tiny_bert, stance_data, adapter, capsys):
    path = tiny_experiment(tmp_path, tiny_bert, adapter)
    plain = run_experiment(load_experiment(path), output_dir=str(tmp_path / "plain"))
    refitted = run_experiment(load_experiment(path, ["training.refit_on_validation=true"]),
                              output_dir=str(tmp_path / "refit"))
    before, after = results_of(plain), results_of(refitted)

    # The first pass is the plain run, step for step: its validation figures are what the report shows.
    assert after["final"] == before["final"] and after["baselines"] == before["baselines"]
    # On test, the baselines are fitted on train + validation too, as the shipped model was.
    assert after["test_baselines"] != before["test_baselines"]
    assert (refitted / "predictions.csv").read_text() == (plain / "predictions.csv").read_text()
    train = after["train"]
    assert train["best_step"] == before["train"]["best_step"] and train["restored_best"]
    refit = train["refit"]
    assert refit["train_samples"] == train["train_samples"] + train["eval_samples"]
    assert refit["epochs"] == pytest.approx(train["best_step"] / train["steps_per_epoch"], abs=1e-3)
    assert "refit" not in before["train"]

    # The test split is scored with the shipped model, which is another model than the first pass's.
    assert after["test"] != before["test"]
    capsys.readouterr()
    assert main(["evaluate", str(refitted), "--data", str(stance_data["test"])]) == 0
    evaluated = json.loads((next((refitted / "evaluations").iterdir()) / "results.json").read_text())
    for key in ("accuracy", "f1_macro"):
        assert evaluated["metrics"][key] == pytest.approx(after["test"][key], abs=1e-6)
    assert "trained anew on train + validation" in (refitted / "report.md").read_text()


def test_second_pass_trains_the_kept_epochs_without_choosing():
    train = {"best_step": 6, "global_step": 12, "steps_per_epoch": 4, "restored_best": True}
    assert kept_epochs(train) == 1.5
    assert kept_epochs({**train, "restored_best": False}) == 3.0

    class Exp:
        path, config = None, {"callbacks": [{"use": "early_stopping"}],
                              "training": {"num_train_epochs": 20, "max_steps": 50, "eval_strategy": "epoch",
                                           "load_best_model_at_end": True, "refit_on_validation": True}}

    again = second_pass(Exp, 1.5)
    assert again.config["callbacks"] == [] and Exp.config["training"]["num_train_epochs"] == 20
    t = again.training
    assert (t.num_train_epochs, t.max_steps, t.eval_strategy, t.save_strategy, t.load_best_model_at_end,
            t.refit_on_validation) == (1.5, -1, "no", "no", False, False)


def test_a_refitted_stack_ships_members_fitted_on_train_and_validation(tmp_path, tiny_bert, stance_data, capsys):
    extra = '\n[evaluation]\nbaselines = ["majority", "tfidf"]\n\n[ensemble]\nstack = ["tfidf"]\n'
    path = tiny_experiment(tmp_path, tiny_bert, "full", extra=extra)
    run = run_experiment(load_experiment(path, ["training.refit_on_validation=true"]), output_dir=str(tmp_path / "r"))
    results = results_of(run)
    assert "ensemble" in results and results["train"]["refit"]
    capsys.readouterr()  # what predict and evaluate apply is what scored the test split: the refitted stack
    assert main(["evaluate", str(run), "--data", str(stance_data["test"])]) == 0
    evaluated = json.loads((next((run / "evaluations").iterdir()) / "results.json").read_text())
    for key in ("accuracy", "f1_macro"):
        assert evaluated["metrics"][key] == pytest.approx(results["test"][key], abs=1e-6)
