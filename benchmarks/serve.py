#!/usr/bin/env python
"""Serving benchmark: `stancerun serve` against a plain FastAPI endpoint that calls a transformers
`pipeline` per request, under the same bounded load on 127.0.0.1.

Five servers, each a whole process started as a user would start it, one after the other:
`stancerun serve` on the run directory (torch float32, then bfloat16), on its float32 ONNX
export (`stancerun export --onnx`) and on its int8 one (`--onnx --int8`), and the plain
endpoint. All serve the same model: the run's; the pipeline its `stancerun export --merge`
copy. The load comes from this process (an asyncio aiohttp client: N single-text requests at
concurrency C, then it stops). Figures: throughput (requests/s), p50/p95 latency, the mean
batch size (from stancerun's /metrics), the client's CPU time per request, and whether every
answer's label equals `stancerun predict`'s on what that server serves (and float32's).

    python benchmarks/serve.py                       # trains lora_r8 on the demo data once (about 2 min), then all
    python benchmarks/serve.py --only ONNX_EXPORT    # one stancerun server and the pipeline endpoint
    python benchmarks/serve.py --requests 200 --concurrency 8    # a quick check

The load generator shares the machine's cores with the server (2 here): every contender pays
that, the fastest most. Results: benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = "FastAPI + pipeline per request"

PIPELINE_APP = '''
import sys
from fastapi import FastAPI, Request
from transformers import pipeline
import uvicorn

classify = pipeline("text-classification", model=sys.argv[1], device="cpu")
app = FastAPI()

@app.get("/health")
def health():
    return {"status": "ok"}

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    return classify(body["inputs"], top_k=None)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(work: Path) -> tuple[Path, Path, Path, Path]:
    """A trained lora_r8 run on the demo data, its merged export and its float32 and int8 ONNX
    exports (made once, then reused)."""
    run, export, onnx32, onnx8 = work / "run", work / "export", work / "onnx-fp32", work / "onnx-int8"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (run / "results.json").is_file():
        subprocess.run([sys.executable, "-m", "stancerun", "run", str(ROOT / "experiments" / "lora_r8.toml"),
                        "--output-dir", str(run)], check=True, env=env, stdout=subprocess.DEVNULL)
    for out, extra in ((export, ["--merge"]), (onnx32, ["--onnx"]), (onnx8, ["--onnx", "--int8"])):
        if not (out / "stancerun.json").is_file() and not (out / "config.json").is_file():
            subprocess.run([sys.executable, "-m", "stancerun", "export", str(run), str(out), *extra], check=True, env=env,
                           stdout=subprocess.DEVNULL)
    return run, export, onnx32, onnx8


def start(command: list[str], port: int) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            process.kill()
            raise RuntimeError("the server did not become healthy in 180 s")
        time.sleep(0.2)


async def load(port: int, texts: list[str], concurrency: int) -> tuple[list[float], list[str], float]:
    """Every text once, as its own request, ``concurrency`` at a time: latencies, top labels, wall
    seconds. aiohttp, not httpx: httpx's client took 1.9 ms of CPU per request here, a third of a
    core at 175 requests/s, taken from the server it measures."""
    import aiohttp

    latencies, labels = [0.0] * len(texts), [""] * len(texts)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(len(texts)):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector, timeout=timeout) as client:
        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                began = time.perf_counter()
                async with client.post("/predict", json={"inputs": texts[i]}) as reply:
                    reply.raise_for_status()
                    answer = await reply.json()
                latencies[i] = time.perf_counter() - began
                labels[i] = (answer[0] if isinstance(answer[0], dict) else answer[0][0])["label"]

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, labels, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(name: str, command: list[str], port: int, texts: list[str], concurrency: int) -> dict:
    import httpx

    process = start(command, port)
    try:
        asyncio.run(load(port, texts[: concurrency * 2], concurrency))  # warm-up, not counted
        cpu = time.process_time()
        latencies, labels, wall = asyncio.run(load(port, texts, concurrency))
        cpu = time.process_time() - cpu
        batches = None
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
        if metrics.status_code == 200 and "stancerun_batch_size_sum" in metrics.text:
            values = {line.split()[0]: float(line.split()[-1]) for line in metrics.text.splitlines()
                      if line.startswith("stancerun_batch_size_")}
            batches = {"forward_passes": values["stancerun_batch_size_count"],
                       "mean_batch_size": round(values["stancerun_batch_size_sum"] / values["stancerun_batch_size_count"], 2)}
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"contender": name, "requests": len(texts), "concurrency": concurrency, "wall_s": round(wall, 2),
            "requests_per_s": round(len(texts) / wall, 1), "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
            "p95_ms": round(1000 * percentile(latencies, 0.95), 1), "batches": batches,
            # The load generator's share of the machine: what the server could not use.
            "client_cpu_ms_per_request": round(1000 * cpu / len(texts), 2), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="stancerun serve's --max-wait-ms")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stancerun-bench-serve"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    parser.add_argument("--rounds", type=int, default=3, help="every contender once per round (default 3)")
    parser.add_argument("--only", nargs="*", help="run these stancerun contenders (by a part of their name) and the "
                                                 "pipeline endpoint")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    run, export, onnx32, onnx8 = prepare(args.work)
    with (ROOT / "experiments" / "data" / "policy_stance.csv").open(newline="", encoding="utf-8") as handle:
        pool = [row["text"] for row in csv.DictReader(handle)]
    texts = [pool[i % len(pool)] for i in range(args.requests)]
    script = args.work / "pipeline_server.py"
    script.write_text(PIPELINE_APP)

    sys.path.insert(0, str(ROOT))
    from stancerun.rundir.artifacts import load_model
    from stancerun.inference.onnx_predict import predict_onnx
    from stancerun.inference.predict import predict

    # Each server's answers against `stancerun predict` on what it serves (the run, or the export).
    float32 = [r["label"] for r in predict(run, texts, None, 64)]
    serve = [sys.executable, "-m", "stancerun", "serve"]
    wait = ["--max-wait-ms", str(args.max_wait_ms)]
    contenders = {
        "stancerun serve RUN_DIR": (serve + [str(run), "--port", "{port}", *wait], lambda: float32),
        "stancerun serve RUN_DIR --dtype bfloat16": (
            serve + [str(run), "--port", "{port}", *wait, "--dtype", "bfloat16"],
            lambda: [r["label"] for r in predict(run, texts, None, 64, saved=load_model(run / "model", dtype="bfloat16"))]),
        "stancerun serve ONNX_EXPORT": (serve + [str(onnx32), "--port", "{port}", *wait],
                                        lambda: [r["label"] for r in predict_onnx(onnx32, texts, None, 64)]),
        "stancerun serve ONNX_INT8_EXPORT": (serve + [str(onnx8), "--port", "{port}", *wait],
                                             lambda: [r["label"] for r in predict_onnx(onnx8, texts, None, 64)]),
        PIPELINE: ([sys.executable, str(script), str(export), "{port}"], lambda: float32),
    }
    chosen = {name: c for name, c in contenders.items()
              if not args.only or name == PIPELINE or any(o in name for o in args.only)}
    references = {name: reference() for name, (_, reference) in chosen.items()}
    # Rounds, each contender once per round in turn: this shared machine's speed drifts by a third
    # over minutes, so a ratio is taken within a round (against that round's pipeline endpoint).
    rounds = []
    for number in range(args.rounds):
        rows = []
        for name, (command, _) in chosen.items():
            port = free_port()
            row = measure(name, [c.replace("{port}", str(port)) for c in command], port, texts, args.concurrency)
            labels = row.pop("labels")
            row["same_labels_as_predict"] = sum(a == b for a, b in zip(labels, references[name])) / len(texts)
            row["same_labels_as_float32_predict"] = sum(a == b for a, b in zip(labels, float32)) / len(texts)
            row["round"] = number
            rows.append(row)
            print(json.dumps(row), flush=True)
        rounds.append(rows)
    summary = summarize(rounds)
    print(f"\n{'contender (median of ' + str(args.rounds) + ' rounds)':<42} {'req/s':>7} {'x pipeline':>11} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'batch':>6} {'= predict':>10} {'= float32':>10} {'client ms':>10}")
    for r in summary:
        print(f"{r['contender']:<42} {r['requests_per_s']:>7} {r['ratio'] or '-':>11} {r['p50_ms']:>7} {r['p95_ms']:>7} "
              f"{r['mean_batch_size'] or '-':>6} {r['same_labels_as_predict']:>10.4f} "
              f"{r['same_labels_as_float32_predict']:>10.4f} {r['client_cpu_ms_per_request']:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "cpus": os.cpu_count(), "requests": args.requests, "concurrency": args.concurrency,
                                    "summary": summary, "rounds": rounds}, indent=2) + "\n")
    print(f"written: {args.out}")


def summarize(rounds: list[list[dict]]) -> list[dict]:
    """Per contender: the median round's figures, its throughput over the pipeline endpoint's in
    the same round (median, and the lowest), and the lowest label agreement of any round."""
    import statistics

    by_name = [{r["contender"]: r for r in round_rows} for round_rows in rounds]
    summary = []
    for name in by_name[0]:
        rows = [found[name] for found in by_name]
        ratios = [found[name]["requests_per_s"] / found[PIPELINE]["requests_per_s"] for found in by_name]
        batches = [r["batches"]["mean_batch_size"] for r in rows if r["batches"]]
        summary.append({
            "contender": name,
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in rows), 1),
            "ratio": None if name == PIPELINE else round(statistics.median(ratios), 2),
            "lowest_ratio": None if name == PIPELINE else round(min(ratios), 2),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 1),
            "p95_ms": round(statistics.median(r["p95_ms"] for r in rows), 1),
            "mean_batch_size": round(statistics.median(batches), 2) if batches else None,
            "same_labels_as_predict": min(r["same_labels_as_predict"] for r in rows),
            "same_labels_as_float32_predict": min(r["same_labels_as_float32_predict"] for r in rows),
            "client_cpu_ms_per_request": round(statistics.median(r["client_cpu_ms_per_request"] for r in rows), 2),
        })
    return summary

if __name__ == "__main__":
    main()
