"""ONNX export: float32 agrees with predict, int8 records its check, pairs work, a failed check
leaves nothing behind, and serving the export never imports torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model, stance_rows, tiny_experiment, write_csv
from stancerun.errors import StancerunError, UsageError
from stancerun.inference.onnx_predict import predict_onnx

EXTRA = "[evaluation]\ncalibrate = true\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"
# Every length the tokenizer produces, a text longer than max_length (truncated), an empty one.
TEXTS = ["good fair plan", "awful harmful tax", "the table report", "very new city park",
         " ".join(["the plan is very good"] * 12), "", "no", "our city policy was really unfair and harmful"]
PAIRS = ["tax", "ban", "park", "tax", "ban", "park", "tax", "ban"]


def train(root: Path, data: str = "") -> Path:
    """A tiny LoRA run (calibrated, so that a temperature is folded) in ``root``."""
    from stancerun.registry import discovery as plugins
    from stancerun.config.experiment import load_experiment
    from stancerun.engine.run import run_experiment

    bert = save_tiny_model(root / "tiny-bert", "bert")
    write_csv(root / "data" / "train.csv", stance_rows(90, seed=1))
    write_csv(root / "data" / "test.csv", stance_rows(30, seed=2))
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: the autouse plugin fixture comes later
        patch.setenv(plugins.ALLOW_ENV, "")
        plugins.reset()
        experiment = load_experiment(tiny_experiment(root, bert, extra=EXTRA, data=data),
                                     ["training.num_train_epochs=10", "training.learning_rate=3e-2"])
        run = run_experiment(experiment, output_dir=str(root / "run"))
        plugins.reset()
    return run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("onnx-run"))


@pytest.fixture(scope="module")
def float32_export(lora_run, tmp_path_factory):
    from stancerun.inference.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx-exports") / "float32"
    return out, export_onnx(lora_run, out)


def test_float32_export_matches_predict(lora_run, float32_export):
    from stancerun.rundir.artifacts import load_model
    from stancerun.inference.onnx_predict import is_onnx_export, load_onnx, onnx_logits, predict_onnx
    from stancerun.inference.predict import predict, shipped_logits

    out, found = float32_export
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".data")) == ["model.onnx"]
    assert (out / "tokenizer.json").is_file()
    info = json.loads((out / "stancerun.json").read_text())
    assert info["format"] == "onnx" and info["quantized"] is None and info["temperature"] == 1.0
    assert info["exported_from"] == str(lora_run) and info["max_length"] == 32
    assert info["agreement"] == found and "ensemble" not in info
    assert found["agreement"] == 1.0 and found["metric"] == "accuracy" and found["metric_drop"] <= 0.005
    assert found["n"] > 0 and found["file_size"] == (out / "model.onnx").stat().st_size
    assert is_onnx_export(out) and not is_onnx_export(lora_run / "model")

    saved = load_model(lora_run / "model")
    expected = predict(lora_run, TEXTS, None, 8, saved=saved)
    model = load_onnx(out)
    got = predict_onnx(out, TEXTS, None, 3, model=model)  # batches of mixed lengths, back in input order
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for want, row in zip(expected, got):
        assert list(row) == list(want) and row["text"] == want["text"]
        np.testing.assert_allclose(list(row["probabilities"].values()), list(want["probabilities"].values()), atol=1e-4)
    # The logits themselves, the temperature folded in: a stronger check than probabilities near 1/3.
    reference = shipped_logits(saved, TEXTS, None, 8) / saved.info["temperature"]
    np.testing.assert_allclose(onnx_logits(model, TEXTS, None, 2), reference, atol=1e-4)


def test_onnx_tokenization_is_the_runs(lora_run, float32_export):
    """The torch-free tokenizer gives stancerun.data.batching.encode's ids, truncation and pairs included."""
    from stancerun.rundir.artifacts import load_model
    from stancerun.data.batching import encode
    from stancerun.inference.onnx_predict import load_onnx

    saved = load_model(lora_run / "model")
    model = load_onnx(float32_export[0])
    for pairs in (None, PAIRS):
        want = encode(saved.tokenizer, TEXTS, pairs, saved.max_length)
        ids, types = model.tokenizer(TEXTS, pairs)
        assert ids == want.input_ids and types == want.token_type_ids
    assert max(len(i) for i in ids) == saved.max_length


def test_int8_export_records_its_check_and_predicts(lora_run, tmp_path):
    from stancerun.inference.onnx_export import export_onnx
    from stancerun.inference.onnx_predict import predict_onnx

    out = tmp_path / "int8"
    # Bounds loose enough for a 2-layer model whose probabilities sit near 1/3; the figures are recorded.
    found = export_onnx(lora_run, out, int8=True, max_disagreement=0.34, max_metric_drop=0.34)
    info = json.loads((out / "stancerun.json").read_text())
    assert info["quantized"] == "int8" and info["agreement"] == found
    assert {"agreement", "metric", "metric_run", "metric_export", "n", "file_size", "seconds"} <= set(found)
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".data")) == ["model.onnx"]
    assert not any(p.name.startswith(".") for p in out.iterdir())
    rows = predict_onnx(out, TEXTS, None, 4)
    assert len(rows) == len(TEXTS) and all(r["label"] in info["labels"] for r in rows)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-6 for r in rows)
    print(f"\nint8: {found}")


def test_pair_run_exports_and_predicts_pairs(tmp_path_factory):
    from stancerun.inference.onnx_export import export_onnx
    from stancerun.inference.onnx_predict import predict_onnx
    from stancerun.inference.predict import predict

    run = train(tmp_path_factory.mktemp("onnx-pairs"), data='text_pair_column = "target"')
    out = run.parent / "exported"
    found = export_onnx(run, out)
    assert found["agreement"] == 1.0
    assert json.loads((out / "stancerun.json").read_text())["text_pair_column"] == "target"
    expected = predict(run, TEXTS, PAIRS, 8)
    got = predict_onnx(out, TEXTS, PAIRS, 3)
    assert [r["target"] for r in got] == PAIRS and "text_pair" not in got[0]
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for want, row in zip(expected, got):
        assert list(row) == list(want)
        np.testing.assert_allclose(list(row["probabilities"].values()), list(want["probabilities"].values()), atol=1e-4)


def test_a_fully_fine_tuned_distilbert_exports(tmp_path, tiny_distilbert, stance_data):
    """Whole weights (no adapter) of another architecture; the graph takes what the tokenizer makes."""
    import onnxruntime as ort

    from stancerun.config.experiment import load_experiment
    from stancerun.inference.onnx_export import export_onnx
    from stancerun.inference.onnx_predict import predict_onnx
    from stancerun.inference.predict import predict
    from stancerun.engine.run import run_experiment

    run = run_experiment(load_experiment(tiny_experiment(tmp_path, tiny_distilbert, "full", extra=EXTRA),
                                         ["training.num_train_epochs=2"]), output_dir=str(tmp_path / "run"))
    out = tmp_path / "exported"
    assert export_onnx(run, out)["agreement"] == 1.0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    info = json.loads((out / "stancerun.json").read_text())
    assert [i.name for i in session.get_inputs()] == info["inputs"] and info["weights"] == "model"
    expected, got = predict(run, TEXTS, None, 8), predict_onnx(out, TEXTS, None, 3)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for want, row in zip(expected, got):
        np.testing.assert_allclose(list(row["probabilities"].values()), list(want["probabilities"].values()), atol=1e-4)

def test_a_failed_check_leaves_nothing(lora_run, tmp_path):
    from stancerun.inference.onnx_export import export_onnx

    out = tmp_path / "rejected"
    with pytest.raises(StancerunError) as raised:
        export_onnx(lora_run, out, max_disagreement=-1.0)
    assert not isinstance(raised.value, UsageError) and raised.value.exit_code == 1
    message = str(raised.value)
    assert "0.00% of labels differ" in message and "at most -100.00% allowed" in message
    assert "accuracy" in message and "at most 0.0050 allowed" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_refuses_what_export_refuses(lora_run, tmp_path):
    from stancerun.inference.onnx_export import export_onnx

    with pytest.raises(UsageError, match="not a run directory"):
        export_onnx(tmp_path, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UsageError, match="not empty"):
        export_onnx(lora_run, tmp_path / "full")
    stacked = tmp_path / "stacked"
    shutil.copytree(lora_run, stacked)
    info_path = stacked / "model" / "stancerun.json"
    info = json.loads(info_path.read_text())
    info["ensemble"] = {"members": ["ngram_svm"], "weights": [1.0, 1.0], "bias": [0.0] * 3, "offsets": [0.0] * 3}
    info_path.write_text(json.dumps(info))
    with pytest.raises(UsageError, match="stacked with ngram_svm"):
        export_onnx(stacked, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_serving_an_export_never_imports_torch(float32_export, lora_run):
    from stancerun.inference.predict import predict

    out = float32_export[0]
    code = ("import json, sys\n"
            "from stancerun.inference.onnx_predict import predict_onnx\n"
            f"rows = predict_onnx({str(out)!r}, {TEXTS!r}, None, 4)\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
            "print(json.dumps([r['label'] for r in rows]))\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [r["label"] for r in predict(lora_run, TEXTS, None, 8)]



def test_the_cli_exports_int8_and_predicts_and_serves_it_without_torch(lora_run, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from stancerun.cli.main import main
    from stancerun.inference.serve import Limits, create_app

    out = tmp_path / "int8"
    assert main(["export", str(lora_run), str(out), "--onnx", "--int8"]) == 0
    said = capsys.readouterr().out
    assert "int8 ONNX" in said and "agree" in said and json.loads((out / "stancerun.json").read_text())["quantized"] == "int8"
    assert main(["export", str(lora_run), str(tmp_path / "x"), "--int8"]) == 2  # --int8 alone: it needs --onnx
    texts = ["we support the new park plan", "this ban is terrible"]
    code = ("import json, sys; from stancerun.cli.main import main; main(['predict', sys.argv[1], *sys.argv[2:]]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code, str(out), *texts], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in predict_onnx(out, texts, None)]
    with TestClient(create_app(out, Limits())) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.05)
        answer = client.post("/predict", json={"inputs": texts}).json()
        assert [a[0]["label"] for a in answer] == [r["label"] for r in rows]
        assert client.get("/info").json()["run"]  # the exported run's figures
