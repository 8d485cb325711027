"""Export: a standalone transformers model that a pipeline loads offline and that agrees with predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_experiment
from stancerun.cli.main import main
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import run_experiment


@pytest.mark.parametrize("adapter, calibrate", [("lora", True), ("full", False)])
def test_exported_model_matches_predict_in_a_pipeline(tmp_path, tiny_bert, stance_data, adapter, calibrate):
    from transformers import pipeline

    from stancerun.inference.predict import predict

    extra = f"[evaluation]\ncalibrate = {str(calibrate).lower()}\nbootstrap_resamples = 0\nplots = false\n"
    run = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_bert, adapter, extra=extra)),
                         output_dir=str(tmp_path / "run"))
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out), "--merge"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "sha256" in card and "| accuracy |" in card

    texts = ["good fair plan", "awful harmful tax", "the table report", "very new city park"]
    expected = predict(run, texts, None, 8)
    classify = pipeline("text-classification", model=str(out), top_k=None, device=-1)
    exported = [{g["label"]: g["score"] for g in got} for got in classify(texts)]
    for want, scores in zip(expected, exported):
        np.testing.assert_allclose([scores[k] for k in want["probabilities"]], list(want["probabilities"].values()), atol=1e-4)
    if adapter == "lora":
        # Not the merge checked against itself: plain peft loads the run's adapter and merges it.
        reference = peft_probabilities(tiny_bert, run, texts)
        labels = json.loads((run / "model" / "stancerun.json").read_text())["labels"]
        np.testing.assert_allclose([[s[k] for k in labels] for s in exported], reference, atol=1e-4)


def peft_probabilities(base_dir, run, texts):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = json.loads((run / "model" / "stancerun.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=len(info["labels"]))
    model = PeftModel.from_pretrained(base, run / "model").merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits / info["temperature"], -1).numpy()


def test_export_of_an_adapter_needs_merge(tmp_path, tiny_bert, stance_data, capsys):
    extra = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    run = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_bert, extra=extra), ["training.num_train_epochs=1"]),
                         output_dir=str(tmp_path / "run"))
    assert main(["export", str(run), str(tmp_path / "x")]) == 2
    assert "--merge" in capsys.readouterr().err
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["temperature"] == 1.0
