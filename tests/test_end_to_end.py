"""The embedded default end to end: the shipped experiment, the packaged MiniLM, the shipped
data, through the real CLI (a small step budget keeps it to seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_default_experiment_runs_offline_and_predicts(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "stancerun", "experiments/lora_r8.toml", "--output-dir", str(run),
         "--set", "training.max_steps=12", "--set", "training.eval_steps=6", "--set", "training.save_steps=6"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trainable" in done.stdout and "before vs after" in done.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["global_step"] == 12
    assert results["train"]["eval_samples"] == 240  # 20% of the 1,200 shipped examples
    env = json.loads((run / "environment.json").read_text())
    assert any(path.endswith("experiments/data/policy_stance.csv") for path in env["data_files"])
    info = json.loads((run / "model" / "stancerun.json").read_text())
    assert info["labels"] == ["support", "neutral", "oppose"]
    # which plugins built it, with the packaged model's resolved (absolute) folder to rebuild it from
    model = info["components"]["model"]
    assert (model["use"], model["plugin"], model["distribution"]) == ("hf", "hf", "stancerun")
    assert Path(model["options"]["name"]).is_absolute() and info["base_model"] == model["options"]["name"]
    assert info["components"]["adapter"]["use"] == "lora" and info["weights"] == "adapter"

    done = subprocess.run([sys.executable, "-m", "stancerun", "predict", str(run),
                           "Congestion charges finally made my bus commute bearable.", "The vote is on Tuesday."],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 2 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert all(r["label"] in ("support", "neutral", "oppose") and 0 < r["confidence"] <= 1 for r in rows)
