"""Training runs on a tiny model made on the fly: the run directory, adapters, pairs, early
stopping, best-model restore and prediction round trips."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_experiment, write_csv
from stancerun.config import tomlio
from stancerun.config.experiment import load_experiment
from stancerun.errors import UsageError
from stancerun.engine.run import run_experiment


def train(tmp_path, model_dir, adapter="lora", extra="", data="", overrides=()):
    path = tiny_experiment(tmp_path, model_dir, adapter, extra, data)
    return run_experiment(load_experiment(path, list(overrides)), output_dir=str(tmp_path / f"run-{adapter}"))


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_lora_run_writes_a_complete_run_directory(tmp_path, tiny_bert, stance_data):
    run = train(tmp_path, tiny_bert)
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "environment.json", "metrics.jsonl", "results.json", "predictions.csv", "report.md",
            "model", "checkpoints", "misclassified.jsonl", "plots"} <= names
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["confusion.png", "loss.png", "reliability.png"]
    assert not [p for p in run.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]

    config = tomlio.loads((run / "config.toml").read_text())
    assert config["name"] == "tiny" and config["training"]["learning_rate"] == 5e-3

    env = json.loads((run / "environment.json").read_text())
    assert {"python", "versions", "plugins", "device", "world_size", "git", "data_files"} <= set(env)
    assert set(env["versions"]) == {"stancerun", "torch", "transformers", "peft", "accelerate"}
    assert set(env["data_files"]) == {str(stance_data["train"]), str(stance_data["test"])}
    assert all(len(h) == 64 for h in env["data_files"].values())

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {line["type"] for line in lines} == {"baseline", "train", "eval", "final"}
    assert all("step" in line and "epoch" in line for line in lines)
    assert lines[0]["type"] == "baseline" and lines[0]["step"] == 0 and lines[-1]["type"] == "final"

    results = json.loads((run / "results.json").read_text())
    assert set(results) == {"format_version", "model", "baseline", "final", "train", "test", "baselines", "intervals",
                            "calibration", "analysis", "data", "plots", "test_baselines", "verdict"}
    assert set(results["baseline"]) == set(results["final"]) == {"loss", "accuracy", "f1_macro"}
    assert results["baseline"] == {k[5:]: v for k, v in lines[0].items() if k.startswith("eval_")}
    assert results["train"]["global_step"] == 27 and results["train"]["samples_per_second"] > 0

    rows = read_csv(run / "predictions.csv")
    assert len(rows) == 18  # 20% of 90 carved for validation
    assert list(rows[0]) == ["text", "label", "prediction", "confidence", "prob_support", "prob_neutral", "prob_oppose"]
    for row in rows:
        probs = [float(row[f"prob_{n}"]) for n in ("support", "neutral", "oppose")]
        assert abs(sum(probs) - 1) < 1e-5 and float(row["confidence"]) == pytest.approx(max(probs), abs=1e-7)

    model = {p.name for p in (run / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "stancerun.json", "tokenizer.json"} <= model
    assert not [p for p in run.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-18", "step-27", "step-9"]
    report = (run / "report.md").read_text()
    assert "Before vs after training" in report and "Confusion matrix" in report


def test_baseline_is_scored_before_training_and_final_after(tmp_path, tiny_bert, stance_data):
    run = train(tmp_path, tiny_bert, "full", overrides=["training.learning_rate=3e-3", "training.num_train_epochs=10",
                                                        "training.save_strategy=no"])
    results = json.loads((run / "results.json").read_text())
    assert results["baseline"]["accuracy"] == pytest.approx(1 / 3)  # an untrained head: chance
    assert results["final"]["accuracy"] > results["baseline"]["accuracy"] + 0.2
    assert results["final"]["loss"] < results["baseline"]["loss"]
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def predict_subprocess(run: Path, out: Path, *extra):
    done = subprocess.run([sys.executable, "-m", "stancerun", "predict", str(run), "--input", str(run / "predictions.csv"),
                           "--output", str(out), *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return read_csv(out)


def assert_same_predictions(run: Path, predicted: list[dict]):
    saved = read_csv(run / "predictions.csv")
    assert [r["label"] for r in predicted] == [r["prediction"] for r in saved]
    names = [k for k in saved[0] if k.startswith("prob_")]
    got = np.array([[float(r[k]) for k in names] for r in predicted])
    want = np.array([[float(r[k]) for k in names] for r in saved])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("adapter", ["lora", "full", "frozen"])
def test_predict_in_a_fresh_process_reproduces_predictions(tmp_path, tiny_bert, stance_data, adapter):
    run = train(tmp_path, tiny_bert, adapter)
    assert_same_predictions(run, predict_subprocess(run, tmp_path / "out.csv"))
    # a LoRA adapter is merged into the base weights at load time: peft (seconds to import) stays out
    probe = (f"import sys; from stancerun.rundir.artifacts import load_model; load_model(__import__('pathlib').Path({str(run / 'model')!r}));"
             "print('peft' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_predict_in_bfloat16_stays_close_and_bad_input_fails_before_the_model_loads(tmp_path, tiny_bert, stance_data):
    from stancerun.cli.main import main

    run = train(tmp_path, tiny_bert)
    out = tmp_path / "bf16.csv"
    assert main(["predict", str(run), "--input", str(run / "predictions.csv"), "--output", str(out), "--dtype", "bfloat16"]) == 0
    saved, got = read_csv(run / "predictions.csv"), read_csv(out)
    names = [k for k in saved[0] if k.startswith("prob_")]
    diff = np.abs(np.array([[float(r[k]) for k in names] for r in got]) - np.array([[float(r[k]) for k in names] for r in saved]))
    assert 0 < diff.max() < 0.03  # bfloat16 keeps 8 bits of mantissa: close, not equal
    # a file without the model's text column is refused before torch is even imported
    (tmp_path / "wrong.csv").write_text("body\nhello\n")
    probe = ("import sys; from stancerun.cli.main import main; code = main(['predict', sys.argv[1], '--input', sys.argv[2]]);"
             "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, str(run), str(tmp_path / "wrong.csv")], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["2", "False"] and "no column 'text'" in done.stderr


def test_bfloat16_on_a_cpu_without_native_support_is_flagged(monkeypatch):
    import torch

    from stancerun.inference.predict import dtype_note

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert "slower than float32" in dtype_note("bfloat16", "cpu")
    assert dtype_note("float32", "cpu") is None and dtype_note("bfloat16", "cuda") is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dtype_note("bfloat16", "cpu") is None


def test_distilbert_lora_round_trip_saves_every_new_head_layer(tmp_path, tiny_distilbert, stance_data):
    run = train(tmp_path, tiny_distilbert)
    config = json.loads((run / "model" / "adapter_config.json").read_text())
    assert set(config["modules_to_save"]) >= {"classifier", "pre_classifier"}
    assert_same_predictions(run, predict_subprocess(run, tmp_path / "out.csv"))


def test_adapter_loads_with_plain_peft_and_gives_the_same_logits(tmp_path, tiny_bert, stance_data):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = train(tmp_path, tiny_bert)
    labels = json.loads((run / "model" / "stancerun.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    saved = read_csv(run / "predictions.csv")
    with torch.no_grad():
        logits = model(**tokenizer([r["text"] for r in saved], padding=True, return_tensors="pt")).logits
    probs = torch.softmax(logits, -1).numpy()
    want = np.array([[float(r[f"prob_{n}"]) for n in labels] for r in saved])
    np.testing.assert_allclose(probs, want, atol=1e-5)


def test_text_pairs_are_encoded_as_target_then_text(tmp_path, tiny_bert, stance_data):
    run = train(tmp_path, tiny_bert, data='text_pair_column = "target"')
    rows = read_csv(run / "predictions.csv")
    assert list(rows[0])[:2] == ["text", "target"]
    from stancerun.rundir.artifacts import load_model
    from stancerun.data.batching import encode

    saved = load_model(run / "model")
    tokenizer = saved.tokenizer
    assert saved.info["text_pair_column"] == "target"
    enc = encode(tokenizer, ["good plan"], ["tax"], 32)
    assert tokenizer.convert_ids_to_tokens(enc.input_ids[0]) == ["[CLS]", "tax", "[SEP]", "good", "plan", "[SEP]"]
    assert enc.token_type_ids[0] == [0, 0, 0, 1, 1, 1]
    # predict needs the pair too, and reproduces the run's predictions with it
    assert_same_predictions(run, predict_subprocess(run, tmp_path / "out.csv"))
    done = subprocess.run([sys.executable, "-m", "stancerun", "predict", str(run), "good plan"], capture_output=True, text=True)
    assert done.returncode == 2 and "--pair" in done.stderr
    done = subprocess.run([sys.executable, "-m", "stancerun", "predict", str(run), "good plan", "--pair", "tax"],
                          capture_output=True, text=True)
    row = json.loads(done.stdout)
    assert row["target"] == "tax" and set(row["probabilities"]) == {"support", "neutral", "oppose"}


def test_label_outside_the_label_list_names_file_and_row(tmp_path, tiny_bert, stance_data):
    rows = read_csv(stance_data["train"])
    rows[4]["label"] = "maybe"
    write_csv(stance_data["train"], rows)
    with pytest.raises(UsageError, match=r"data/train.csv, row 6: label 'maybe' is not one of"):
        train(tmp_path, tiny_bert)
    from stancerun.cli.main import main

    assert main(["run", str(tmp_path / "tiny.toml")]) == 2


def test_early_stopping_stops_and_best_model_is_restored(tmp_path, tiny_bert, stance_data):
    extra = '[[callbacks]]\nuse = "early_stopping"\npatience = 1\nmetric = "loss"\nthreshold = 10.0\n'
    run = train(tmp_path, tiny_bert, extra=extra, overrides=["training.eval_strategy=steps", "training.eval_steps=2",
                                                              "training.num_train_epochs=5"])
    results = json.loads((run / "results.json").read_text())
    train_info = results["train"]
    assert train_info["stopped_early"] and train_info["global_step"] == 4 < train_info["total_steps_planned"]
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    best = max(evals, key=lambda e: e["eval_accuracy"])  # the first of equals wins, as in the engine
    assert train_info["best_step"] == best["step"] and train_info["restored_best"]
    assert results["final"]["accuracy"] == pytest.approx(best["eval_accuracy"])
    assert results["final"]["loss"] == pytest.approx(best["eval_loss"], abs=1e-6)


def test_best_model_restore_returns_to_the_best_evaluation(tmp_path, tiny_bert, stance_data):
    # A huge learning rate makes later evaluations worse than an early one.
    run = train(tmp_path, tiny_bert, "full", overrides=["training.learning_rate=0.2", "training.eval_strategy=steps",
                                                        "training.eval_steps=3", "training.metric_for_best_model=loss"])
    results = json.loads((run / "results.json").read_text())
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    best = min(evals, key=lambda e: e["eval_loss"])
    assert best["step"] != evals[-1]["step"], "the test needs the best evaluation not to be the last"
    assert results["train"]["best_step"] == best["step"]
    assert results["final"]["loss"] == pytest.approx(best["eval_loss"], abs=1e-5)


def test_dry_run_trains_and_writes_nothing(tmp_path, tiny_bert, stance_data, capsys):
    path = tiny_experiment(tmp_path, tiny_bert)
    assert run_experiment(load_experiment(path), output_dir=str(tmp_path / "dry"), dry_run=True) is None
    assert not (tmp_path / "dry").exists()
    assert "dry run" in capsys.readouterr().out


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, tiny_bert, stance_data):
    run = train(tmp_path, tiny_bert, overrides=["training.gradient_accumulation_steps=3", "training.save_strategy=no"])
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["global_step"] == 9  # 9 batches per epoch / 3, times 3 epochs
