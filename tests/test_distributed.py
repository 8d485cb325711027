"""Two processes on the CPU (gloo), as `accelerate launch` / torchrun start them: every
evaluation example counts exactly once, and the untrained model scores exactly as in one process."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import tiny_experiment
from stancerun.config.experiment import load_experiment
from stancerun.engine.run import run_experiment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_processes_match_one_process(tmp_path, tiny_bert, stance_data):
    extra = "[evaluation]\nbootstrap_resamples = 0\nplots = false\n"
    path = tiny_experiment(tmp_path, tiny_bert, extra=extra)
    one = run_experiment(load_experiment(path), output_dir=str(tmp_path / "one"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), "-m", "stancerun", "run", str(path),
                           "--output-dir", str(tmp_path / "two")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two"
    assert json.loads((two / "environment.json").read_text())["world_size"] == 2
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    # same weights before training, same data: the gathered evaluation must agree exactly
    assert r2["baseline"] == pytest.approx(r1["baseline"], abs=1e-6)
    assert r2["train"]["world_size"] == 2 and r2["train"]["global_step"] == 15  # 9 batches over 2 processes, 3 epochs
    # every validation example exactly once, in the split's order
    assert [r["text"] for r in read(two / "predictions.csv")] == [r["text"] for r in read(one / "predictions.csv")]
    print("one process:", r1["final"], "two processes:", r2["final"])
