"""Peak memory of the hand-tuned Trainer (b) and stancerun (c), each in a fresh process.

    python benchmarks/memory.py [--limit 512] [--repeats 2]

throughput.py runs every contender in one process, so a later contender's RSS includes what
earlier ones left allocated; here each training run (the same as throughput.py's: 512 TweetEval
rows, 1 epoch, evaluation on the test rows) gets a process of its own, and the figure is the
process's peak resident set (getrusage ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import contextlib, io, json, os, resource, sys, tempfile
from pathlib import Path
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, {here!r})
import throughput as T
train = T.read_split(T.DEFAULT_DATA / "train.csv", {limit})
evaluation = T.read_split(T.DEFAULT_DATA / "test.csv", None)
with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
    result = (T.tuned_trainer if {which!r} == "b" else T.stancerun_run)(train, evaluation, T.Schedule(1, T.LR), Path(tmp))
result = result[0] if isinstance(result, tuple) else result
print(json.dumps({{"name": result["name"], "train_samples_per_s": result["train_samples_per_s"],
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="peak memory of (b) and (c), each in a fresh process")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for which in ("b", "c"):
            done = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), limit=args.limit, which=which)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    for which in ("(b)", "(c)"):
        peaks = [r["peak_rss_mib"] for r in rows if r["name"].startswith(which)]
        print(f"{which}: peak RSS {min(peaks)}-{max(peaks)} MiB")


if __name__ == "__main__":
    main()
