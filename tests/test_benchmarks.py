"""The benchmarks are not run here (they need ../shared and minutes), but what they compare must
be right: each prediction contender computes what stancerun computes, and the scripts start."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine import read_csv, train

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"benchmarks_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("how", ["seed", "pipeline"])
def test_prediction_contenders_give_stancerun_s_labels(tmp_path, tiny_bert, stance_data, how):
    run = train(tmp_path, tiny_bert)
    saved = read_csv(run / "predictions.csv")
    source, target = tmp_path / "in.csv", tmp_path / "out.jsonl"
    with source.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"]] + [[r["text"]] for r in saved])
    assert load_script("predict_contenders").main([how, str(run), str(source), str(target)]) == 0
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    key = "prediction" if how == "seed" else "label"
    assert [r[key] for r in rows] == [r["prediction"] for r in saved]


@pytest.mark.parametrize("script", ["throughput", "memory", "gpu_bf16", "predict_contenders", "stance_recipe", "sweep"])
def test_benchmark_scripts_start(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_prediction_ratios_and_agreement():
    throughput = load_script("throughput")
    rows = [{"key": k, "texts_per_s": v} for k, v in [("stancerun_float32", 300), ("stancerun_bfloat16", 450),
                                                      ("stancerun_in_process", 400), ("seed_in_process", 150),
                                                      ("pipeline_in_process", 250), ("seed_process", 100),
                                                      ("pipeline_process", 200), ("stancerun_onnx_int8", 600)]]
    ratios = throughput.predict_ratios(rows)
    assert ratios["stancerun_onnx_int8"]["over_pipeline_process"] == 3.0 and "stancerun_onnx_float32" not in ratios
    assert ratios["stancerun_float32"] == {"over_seed_in_process": 2.0, "over_pipeline_in_process": 1.2,
                                           "over_seed_process": 3.0, "over_pipeline_process": 1.5}
    exact = [{"label": "a", "probabilities": {"a": 0.6, "b": 0.4}}, {"label": "b", "probabilities": {"a": 0.49, "b": 0.51}}]
    other = [{"label": "a", "probabilities": {"a": 0.59, "b": 0.41}}, {"label": "a", "probabilities": {"a": 0.5, "b": 0.5}}]
    assert throughput.agreement(exact, other) == {"label_agreement_with_float32": 0.5, "max_probability_difference": 0.01}


def test_the_recipe_ablation_rebuilds_the_run_s_own_stack(tmp_path, tiny_bert, stance_data):
    """docs/results.md's rows come from stance_recipe.analyse: its recipe row must be the run's shipped model,
    and every other row must be fitted on validation alone."""
    extra = f"""[evaluation]
headline = "f1_macro"
bootstrap_resamples = 50
plots = false
baselines = ["majority", "ngram_svm", {{use = "embedding_probe", model = "{tiny_bert}", C = 10.0}}]

[ensemble]
stack = ["ngram_svm", "embedding_probe"]
"""
    run = train(tmp_path, tiny_bert, extra=extra, data='text_pair_column = "target"')
    recipe = load_script("stance_recipe")
    found = recipe.analyse(run)  # asserts that its rebuilt recipe row equals the run's test figures
    results = json.loads((run / "results.json").read_text())
    assert found["rows"][recipe.RECIPE]["test"]["f1_macro"]["value"] == pytest.approx(results["test"]["f1_macro"])
    assert set(found["rows"]) == {"fine-tuned alone", *(name for name, _, _ in recipe.VARIANTS),
                                  "baseline: majority", "baseline: ngram_svm", "baseline: embedding_probe"}
    assert all(row["validation_cv"] for name, row in found["rows"].items() if not name.startswith("baseline"))
    assert "| fine-tuned alone |" in recipe.table(found)
