#!/usr/bin/env python
"""Serving benchmark: `stancerun serve` against a plain FastAPI endpoint that calls a transformers
`pipeline` per request, under the same bounded load on 127.0.0.1.

Three servers, each a whole process started as a user would start it, one after the other:
`stancerun serve` on the run directory (torch, float32) and on the run's int8 ONNX export
(`stancerun export --onnx --int8`), and the plain endpoint. The load
comes from this process (an asyncio httpx client: N single-text requests at concurrency C, then
it stops). All serve the same model: the run's; the pipeline its `stancerun export --merge` copy. Figures: throughput (requests/s), p50/p95 latency, the mean batch size (from
stancerun's /metrics), and whether every answer's label equals `stancerun predict`'s on what
that server serves.

    python benchmarks/serve.py                       # trains lora_r8 on the demo data once (about 2 min), then both
    python benchmarks/serve.py --requests 200 --concurrency 8    # a quick check

The load generator shares the machine's cores with the server (2 here): both contenders pay that.
Results: benchmarks/results/serve.json.
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


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """A trained lora_r8 run on the demo data, its merged export and its int8 ONNX export (made once, then reused)."""
    run, export, onnx = work / "run", work / "export", work / "onnx-int8"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (run / "results.json").is_file():
        subprocess.run([sys.executable, "-m", "stancerun", "run", str(ROOT / "experiments" / "lora_r8.toml"),
                        "--output-dir", str(run)], check=True, env=env, stdout=subprocess.DEVNULL)
    if not (export / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "stancerun", "export", str(run), str(export), "--merge"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
    if not (onnx / "model.onnx").is_file():
        subprocess.run([sys.executable, "-m", "stancerun", "export", str(run), str(onnx), "--onnx", "--int8"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
    return run, export, onnx


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
    """Every text once, as its own request, ``concurrency`` at a time: latencies, top labels, wall seconds."""
    import httpx

    latencies, labels = [0.0] * len(texts), [""] * len(texts)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(len(texts)):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=120) as client:
        async def worker():
            while not queue.empty():
                i = queue.get_nowait()
                began = time.perf_counter()
                reply = await client.post("/predict", json={"inputs": texts[i]})
                latencies[i] = time.perf_counter() - began
                reply.raise_for_status()
                answer = reply.json()
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
        latencies, labels, wall = asyncio.run(load(port, texts, concurrency))
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
            "p95_ms": round(1000 * percentile(latencies, 0.95), 1), "batches": batches, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="stancerun serve's --max-wait-ms")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stancerun-bench-serve"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    run, export, onnx = prepare(args.work)
    with (ROOT / "experiments" / "data" / "policy_stance.csv").open(newline="", encoding="utf-8") as handle:
        pool = [row["text"] for row in csv.DictReader(handle)]
    texts = [pool[i % len(pool)] for i in range(args.requests)]
    script = args.work / "pipeline_server.py"
    script.write_text(PIPELINE_APP)

    sys.path.insert(0, str(ROOT))
    from stancerun.onnxpredict import predict_onnx
    from stancerun.predict import predict

    # Each server's answers against `stancerun predict` on what it serves (the run, or the export).
    expected = [r["label"] for r in predict(run, texts, None, 64)]
    expected_onnx = [r["label"] for r in predict_onnx(onnx, texts, None, 64)]
    from stancerun.artifacts import load_model

    expected_bf16 = [r["label"] for r in predict(run, texts, None, 64, saved=load_model(run / "model", dtype="bfloat16"))]
    serve = [sys.executable, "-m", "stancerun", "serve"]
    rows = []
    for name, command, reference in (
            ("stancerun serve RUN_DIR", serve + [str(run), "--port", "{port}", "--max-wait-ms", str(args.max_wait_ms)],
             expected),
            ("stancerun serve RUN_DIR --dtype bfloat16", serve + [str(run), "--port", "{port}", "--max-wait-ms",
                                                                   str(args.max_wait_ms), "--dtype", "bfloat16"],
             expected_bf16),
            ("stancerun serve ONNX_INT8_EXPORT", serve + [str(onnx), "--port", "{port}", "--max-wait-ms",
                                                          str(args.max_wait_ms)], expected_onnx),
            ("FastAPI + pipeline per request", [sys.executable, str(script), str(export), "{port}"], expected)):
        port = free_port()
        row = measure(name, [c.replace("{port}", str(port)) for c in command], port, texts, args.concurrency)
        row["same_labels_as_predict"] = sum(a == b for a, b in zip(row.pop("labels"), reference)) / len(texts)
        rows.append(row)
        print(json.dumps(row))
    theirs = rows[-1]
    ratios = {r["contender"]: round(r["requests_per_s"] / theirs["requests_per_s"], 2) for r in rows[:-1]}
    print(f"\n{'contender':<40} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'mean batch':>11} {'labels = predict':>17}")
    for r in rows:
        batch = r["batches"]["mean_batch_size"] if r["batches"] else "-"
        print(f"{r['contender']:<40} {r['requests_per_s']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {batch:>11} "
              f"{r['same_labels_as_predict']:>17.4f}")
    for name, ratio in ratios.items():
        print(f"throughput, {name} / pipeline endpoint: {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "cpus": os.cpu_count(), "rows": rows, "throughput_ratios": ratios}, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
