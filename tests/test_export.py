"""Export: a standalone transformers model that a pipeline loads offline and that agrees with predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_experiment
from stancerun.cli import main
from stancerun.config import load_experiment
from stancerun.runner import run_experiment


@pytest.mark.parametrize("adapter, calibrate", [("lora", True), ("full", False)])
def test_exported_model_matches_predict_in_a_pipeline(tmp_path, tiny_bert, stance_data, adapter, calibrate):
    from transformers import pipeline

    from stancerun.predict import predict

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
    for want, got in zip(expected, classify(texts)):
        scores = {g["label"]: g["score"] for g in got}
        np.testing.assert_allclose([scores[k] for k in want["probabilities"]], list(want["probabilities"].values()), atol=1e-4)


def test_export_of_an_adapter_needs_merge(tmp_path, tiny_bert, stance_data, capsys):
    extra = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
    run = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_bert, extra=extra), ["training.num_train_epochs=1"]),
                         output_dir=str(tmp_path / "run"))
    assert main(["export", str(run), str(tmp_path / "x")]) == 2
    assert "--merge" in capsys.readouterr().err
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["temperature"] == 1.0
