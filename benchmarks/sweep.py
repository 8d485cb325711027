#!/usr/bin/env python
"""Sweep benchmark: TPE with median pruning against the shipped grid, on the demo data.

Each contender is a whole `stancerun` process, as a user would run it, one after the other:

  grid   experiments/sweep_lora.toml      3 LoRA ranks x 2 learning rates, every trial to its end
  tpe    experiments/sweep_lora_tpe.toml  TPE over the ranks and a learning-rate range, median pruning

For each: the training steps of every trial together (a pruned trial counts the steps it ran),
the wall time, and the best validation accuracy with its bootstrap interval (from the sweep's
leaderboard). The question (issue 14): does TPE + pruning reach the grid's best within that
interval while spending at most half of the grid's training steps?

    python benchmarks/sweep.py                  # both (about 25 minutes on 2 cores)
    python benchmarks/sweep.py --only tpe       # one, the other read from its last run
    python benchmarks/sweep.py --tpe experiments/my_tpe.toml --only tpe

A contender's sweep directory is kept (default /tmp/stancerun-bench-sweep/NAME) and reused unless
--force; results in benchmarks/results/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_contender(name: str, experiment: Path, runs: Path, force: bool, workers: int) -> dict:
    out = runs / name
    timing = out / "benchmark_wall.json"
    if force or not timing.is_file():
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "stancerun", "run", str(experiment), "--output-dir", str(out)]
        if workers > 1:
            command += ["--workers", str(workers)]
        began = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=subprocess.DEVNULL if name != "tpe" else None)
        timing.write_text(json.dumps({"wall_s": round(time.perf_counter() - began, 1), "workers": workers}))
    return summarize(name, experiment, out, json.loads(timing.read_text()))


def summarize(name: str, experiment: Path, out: Path, timing: dict) -> dict:
    trials = json.loads((out / "trials.json").read_text())
    board = json.loads((out / "leaderboard.json").read_text())
    leader = board["rows"][0]
    return {"contender": name, "experiment": str(experiment.relative_to(ROOT)) if experiment.is_relative_to(ROOT) else str(experiment),
            "sweep_dir": str(out), "wall_s": timing["wall_s"], "workers": timing.get("workers", 1),
            "trials": trials["trials"], "states": trials["states"], "steps": trials["steps"],
            "metric": board["metric"], "best": {"run": leader["path"].rsplit("/", 1)[-1], "value": leader["value"],
                                                 "interval": leader["interval"], "params": leader["params"]},
            "per_trial": [{"run": r["run"], "state": r["state"], "params": r["params"], "value": r["value"],
                           "steps": r["steps"]} for r in trials["rows"]]}


def verdict(grid: dict, tpe: dict) -> dict:
    low = grid["best"]["interval"][0] if grid["best"]["interval"] else grid["best"]["value"]
    return {"steps_ratio": round(tpe["steps"] / grid["steps"], 3), "wall_ratio": round(tpe["wall_s"] / grid["wall_s"], 3),
            "best_difference": round(tpe["best"]["value"] - grid["best"]["value"], 4),
            "reaches_grid_best": tpe["best"]["value"] >= low, "at_most_half_the_steps": tpe["steps"] <= grid["steps"] / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "experiments" / "sweep_lora.toml")
    parser.add_argument("--tpe", type=Path, default=ROOT / "experiments" / "sweep_lora_tpe.toml")
    parser.add_argument("--only", choices=("grid", "tpe"), help="run one contender; read the other from its last run")
    parser.add_argument("--force", action="store_true", help="run again even if the sweep directory holds a result")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the TPE sweep (default 1)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/stancerun-bench-sweep"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep.json")
    args = parser.parse_args()

    args.runs.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, experiment in (("grid", args.grid), ("tpe", args.tpe)):
        force = args.force and args.only in (None, name)
        if args.only not in (None, name) and (args.runs / name / "benchmark_wall.json").is_file():
            results[name] = summarize(name, experiment, args.runs / name,
                                      json.loads((args.runs / name / "benchmark_wall.json").read_text()))
        else:
            results[name] = run_contender(name, experiment, args.runs, force, args.workers if name == "tpe" else 1)
    grid, tpe = results["grid"], results["tpe"]
    summary = verdict(grid, tpe)
    print(f"\n{'contender':<10} {'trials':<28} {'steps':>7} {'wall s':>8}  best {grid['metric']} [95% interval]")
    for r in (grid, tpe):
        states = ", ".join(f"{n} {s}" for s, n in r["states"].items())
        interval = r["best"]["interval"]
        shown = f"{r['best']['value']:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
        print(f"{r['contender']:<10} {str(r['trials']) + ' (' + states + ')':<28} {r['steps']:>7} {r['wall_s']:>8.0f}  "
              f"{shown}  {r['best']['params']}")
    print(f"\ntpe / grid: steps {summary['steps_ratio']:.2f}, wall time {summary['wall_ratio']:.2f}; best "
          f"{summary['best_difference']:+.4f} ({'within' if summary['reaches_grid_best'] else 'below'} the grid best's interval)")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "grid": grid, "tpe": tpe, "verdict": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
