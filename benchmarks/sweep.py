#!/usr/bin/env python
"""Sweep benchmark: TPE with median pruning against the shipped grid, on the demo data.

Each contender is a whole `stancerun` process, as a user would run it, one after the other:

  grid   experiments/sweep_lora.toml      3 LoRA ranks x 2 learning rates, every trial to its end
  tpe    experiments/sweep_lora_tpe.toml  TPE over the ranks and a learning-rate range, median pruning

For each: the training steps of every trial together (a pruned trial counts the steps it ran),
the wall time, and the best validation accuracy with its bootstrap interval (from the sweep's
leaderboard). The question (issue 14): does TPE + pruning reach the grid's best within that
interval while spending at most half of the grid's training steps?

    python benchmarks/sweep.py                  # the grid, then TPE with sampler seeds 0, 1, 2 (about 20 minutes)
    python benchmarks/sweep.py --only tpe --seeds 3 4   # more TPE seeds; the grid read from its last run
    python benchmarks/sweep.py --tpe experiments/my_tpe.toml --only tpe --force

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


def run_contender(name: str, experiment: Path, runs: Path, force: bool, workers: int, seed: int | None = None) -> dict:
    out = runs / name
    timing = out / "benchmark_wall.json"
    if force or not timing.is_file():
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "stancerun", "run", str(experiment), "--output-dir", str(out)]
        if workers > 1:
            command += ["--workers", str(workers)]
        if seed is not None:
            command += ["--set", f"sweep.seed={seed}"]
        began = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=subprocess.DEVNULL if name != "tpe" else None)
        timing.write_text(json.dumps({"wall_s": round(time.perf_counter() - began, 1), "workers": workers}))
    return summarize(name, experiment, out, json.loads(timing.read_text()))


def summarize(name: str, experiment: Path, out: Path, timing: dict) -> dict:
    trials = json.loads((out / "trials.json").read_text())
    board = json.loads((out / "leaderboard.json").read_text())
    leader = board["rows"][0]
    return {"contender": name, "seed": trials.get("seed"), "experiment": str(experiment.relative_to(ROOT)) if experiment.is_relative_to(ROOT) else str(experiment),
            "sweep_dir": str(out), "wall_s": timing["wall_s"], "workers": timing.get("workers", 1),
            "trials": trials["trials"], "states": trials["states"], "steps": trials["steps"],
            "metric": board["metric"], "best": {"run": leader["path"].rsplit("/", 1)[-1], "value": leader["value"],
                                                 "interval": leader["interval"], "params": leader["params"]},
            "per_trial": [{"run": r["run"], "state": r["state"], "params": r["params"], "value": r["value"],
                           "steps": r["steps"]} for r in trials["rows"]]}


def verdict(grid: dict, tpe: dict) -> dict:
    low = grid["best"]["interval"]["low"] if grid["best"]["interval"] else grid["best"]["value"]
    return {"steps_ratio": round(tpe["steps"] / grid["steps"], 3), "wall_ratio": round(tpe["wall_s"] / grid["wall_s"], 3),
            "best_difference": round(tpe["best"]["value"] - grid["best"]["value"], 4),
            "reaches_grid_best": tpe["best"]["value"] >= low, "at_most_half_the_steps": tpe["steps"] <= grid["steps"] / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "experiments" / "sweep_lora.toml")
    parser.add_argument("--tpe", type=Path, default=ROOT / "experiments" / "sweep_lora_tpe.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="TPE sampler seeds, one sweep each")
    parser.add_argument("--only", choices=("grid", "tpe"), help="run one contender; read the other from its last run")
    parser.add_argument("--force", action="store_true", help="run again even if the sweep directory holds a result")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for each TPE sweep (default 1)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/stancerun-bench-sweep"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep.json")
    args = parser.parse_args()

    args.runs.mkdir(parents=True, exist_ok=True)
    wanted = [("grid", args.grid, None, 1)] + [(f"tpe-seed{seed}", args.tpe, seed, args.workers) for seed in args.seeds]
    results = []
    for name, experiment, seed, workers in wanted:
        kind = name.split("-")[0]
        saved = args.runs / name / "benchmark_wall.json"
        if args.only not in (None, kind) and saved.is_file():
            results.append(summarize(name, experiment, args.runs / name, json.loads(saved.read_text())))
        else:
            results.append(run_contender(name, experiment, args.runs, args.force and args.only in (None, kind), workers,
                                         seed))
    grid, tpes = results[0], results[1:]
    verdicts = [verdict(grid, tpe) for tpe in tpes]
    print(f"\n{'contender':<14} {'trials':<26} {'steps':>7} {'wall s':>8}  best {grid['metric']} [95% interval]")
    for r in results:
        states = ", ".join(f"{n} {s}" for s, n in r["states"].items())
        interval = r["best"]["interval"]
        shown = f"{r['best']['value']:.4f}" + (f" [{interval['low']:.4f}, {interval['high']:.4f}]" if interval else "")
        print(f"{r['contender']:<14} {str(r['trials']) + ' (' + states + ')':<26} {r['steps']:>7} {r['wall_s']:>8.0f}  "
              f"{shown}  {r['best']['params']}")
    print()
    for tpe, v in zip(tpes, verdicts):
        print(f"{tpe['contender']} / grid: steps {v['steps_ratio']:.2f}, wall time {v['wall_ratio']:.2f}; best "
              f"{v['best_difference']:+.4f} ({'within' if v['reaches_grid_best'] else 'below'} the grid best's interval)")
    met = sum(v["reaches_grid_best"] and v["at_most_half_the_steps"] for v in verdicts)
    print(f"goal (the grid's best within its interval, at most half its steps) met by {met} of {len(verdicts)} TPE sweeps")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "grid": grid, "tpe": tpes, "verdicts": verdicts, "met": met}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
