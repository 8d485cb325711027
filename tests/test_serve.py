"""`stancerun serve`: every endpoint and error code through an in-process client, and the real
server on a free local port under a bounded burst, stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import stance_rows, tiny_experiment, write_csv
from stancerun.config.experiment import load_experiment
from stancerun.inference.predict import predict
from stancerun.engine.run import run_experiment
from stancerun.inference.serve import Limits, create_app

QUIET = "[evaluation]\nbootstrap_resamples = 0\nplots = false\nbaselines = []\n"


def train(folder, tiny_bert, data: str = "") -> object:
    write_csv(folder / "data" / "train.csv", stance_rows(90, seed=1))
    write_csv(folder / "data" / "test.csv", stance_rows(30, seed=2))
    path = tiny_experiment(folder, tiny_bert, extra=QUIET, data=data)
    return run_experiment(load_experiment(path, ["training.num_train_epochs=1"]), output_dir=str(folder / "run"))


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


@pytest.fixture(scope="module")
def pair_run_dir(tmp_path_factory, tiny_bert):
    return train(tmp_path_factory.mktemp("serve_pairs"), tiny_bert, data='text_pair_column = "target"')


def client_for(run_dir, **options):
    from fastapi.testclient import TestClient

    limits = Limits(**{k: v for k, v in options.items() if k != "api_key"})
    client = TestClient(create_app(run_dir, limits, options.get("api_key")))
    client.__enter__()  # runs the lifespan: the model loads in its thread
    deadline = time.time() + 60
    while client.get("/health").status_code != 200:
        assert time.time() < deadline, client.get("/health").json()
        time.sleep(0.05)
    return client


TEXTS = ["we support the new park plan", "this ban is terrible", "the city plan is about taxes"]


def test_predict_shapes_match_tei_and_equal_stancerun_predict(run_dir):
    client = client_for(run_dir)
    expected = predict(run_dir, TEXTS, None, 64)
    one = client.post("/predict", json={"inputs": TEXTS[0]})
    assert one.status_code == 200
    scores = one.json()
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert scores[0]["label"] == expected[0]["label"] and scores[0]["score"] == pytest.approx(expected[0]["confidence"], abs=1e-5)
    assert {s["label"] for s in scores} == set(expected[0]["probabilities"])
    batch = client.post("/predict", json={"inputs": TEXTS}).json()
    assert [b[0]["label"] for b in batch] == [e["label"] for e in expected]
    for b, e in zip(batch, expected):
        assert {s["label"]: s["score"] for s in b} == pytest.approx(e["probabilities"], abs=1e-5)
    raw = client.post("/predict", json={"inputs": TEXTS, "raw_scores": True}).json()
    assert [r[0]["label"] for r in raw] == [e["label"] for e in expected] and sum(s["score"] for s in raw[0]) != pytest.approx(1)
    client.__exit__(None, None, None)


def test_info_health_and_metrics(run_dir):
    client = client_for(run_dir, max_batch_size=16)
    info = client.get("/info").json()
    assert info["labels"] == ["support", "neutral", "oppose"] and info["max_batch_size"] == 16
    assert info["max_input_length"] == 32 and "accuracy" in info["run"]["final"]
    client.post("/predict", json={"inputs": TEXTS})
    text = client.get("/metrics").text
    assert 'stancerun_requests_total{status="200"} 1.0' in text and "stancerun_batch_size_bucket" in text
    assert "stancerun_queue_length 0.0" in text and "stancerun_request_seconds_count 1.0" in text
    client.__exit__(None, None, None)


def test_every_error_code(run_dir):
    client = client_for(run_dir, max_client_batch_size=4, api_key="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    assert client.post("/predict", json={"inputs": "x"}).status_code == 401
    assert client.post("/predict", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"}).json()["error_type"] == "Unauthorized"
    for body in (b"{not json", b'"just a string"', b'{"input": "x"}', b'{"inputs": []}', b'{"inputs": [1, 2]}',
                 b'{"inputs": [["tax", "pairs to a model without pairs"]]}', b'{"inputs": "x", "raw_scores": "yes"}',
                 b"\xff\xfe", b"null", b'{"inputs": {"a": 1}}'):
        answer = client.post("/predict", content=body, headers=auth)
        assert answer.status_code == 422, body
        assert set(answer.json()) == {"error", "error_type"} and answer.json()["error_type"] == "Validation"
    too_many = client.post("/predict", json={"inputs": ["x"] * 5}, headers=auth)
    assert too_many.status_code == 413 and "at most 4" in too_many.json()["error"]
    long_text = " ".join(["plan"] * 100)
    assert client.post("/predict", json={"inputs": long_text}, headers=auth).status_code == 413
    assert client.post("/predict", json={"inputs": long_text, "truncate": True}, headers=auth).status_code == 200
    assert client.get("/health").status_code == 200  # still serving after all of that
    client.__exit__(None, None, None)


def test_a_full_queue_answers_429(run_dir):
    from stancerun.inference.serve import Batcher, Job, Metrics, RequestError

    batcher = Batcher(predictor=None, limits=Limits(max_queue=2), metrics=Metrics())  # never started: nothing drains
    for _ in range(2):
        batcher.submit(Job(["x"], None, False, None, None))
    with pytest.raises(RequestError) as info:
        batcher.submit(Job(["x"], None, False, None, None))
    assert info.value.status == 429 and info.value.error_type == "Overloaded"


def test_a_pair_model_requires_pairs(pair_run_dir):
    client = client_for(pair_run_dir)
    refused = client.post("/predict", json={"inputs": ["a flat list is a batch of texts", "so no pairs"]})
    assert refused.status_code == 422 and "(target, text) pairs" in refused.json()["error"]
    pairs = [["park", "we support the new park plan"], ["ban", "this ban is terrible"]]
    answer = client.post("/predict", json={"inputs": pairs}).json()
    expected = predict(pair_run_dir, [p[1] for p in pairs], [p[0] for p in pairs], 64)
    assert [a[0]["label"] for a in answer] == [e["label"] for e in expected]
    assert answer[1][0]["score"] == pytest.approx(expected[1]["confidence"], abs=1e-5)
    client.__exit__(None, None, None)


def test_a_failing_forward_pass_is_a_500_and_the_server_goes_on(run_dir):
    from stancerun.inference.serve import TorchPredictor

    class Flaky(TorchPredictor):
        calls = 0

        def logits(self, texts, pairs):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("out of memory")
            return super().logits(texts, pairs)

    from fastapi.testclient import TestClient

    with TestClient(create_app(run_dir, Limits(), None, predictor_factory=Flaky)) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.05)
        failed = client.post("/predict", json={"inputs": "x"})
        assert failed.status_code == 500 and failed.json() == {"error": "RuntimeError: out of memory", "error_type": "Backend"}
        assert client.post("/predict", json={"inputs": "x"}).status_code == 200


def wait_until_healthy(server: subprocess.Popen, base: str, timeout: float = 120) -> None:
    """Until a `stancerun serve` subprocess answers /health with 200 (its model loaded)."""
    def alive() -> None:
        assert server.poll() is None, server.stdout.read()[-3000:]

    until_healthy(base, alive, timeout, pause=0.1)


def until_healthy(base: str, alive, timeout: float, pause: float) -> None:
    """Poll ``base``/health until it answers 200; ``alive()`` asserts the server is still there."""
    import httpx

    deadline = time.time() + timeout
    while True:
        alive()
        assert time.time() < deadline
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(pause)


def test_the_real_server_batches_a_burst_and_stops_on_sigterm(run_dir):
    import httpx

    from test_distributed import free_port

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "stancerun", "serve", str(run_dir), "--port", str(port),
                               "--max-wait-ms", "300", "--max-batch-size", "16"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    last: list[threading.Thread] = []
    try:
        wait_until_healthy(server, base)
        texts = [row["text"] for row in stance_rows(48, seed=5)]
        answers: dict[int, object] = {}

        def send(i: int) -> None:
            try:
                reply = httpx.post(f"{base}/predict", json={"inputs": texts[i]}, timeout=60)
                answers[i] = reply.json()[0]["label"] if reply.status_code == 200 else reply.status_code
            except httpx.TransportError as error:
                answers[i] = error

        def burst(indices) -> list[threading.Thread]:
            threads = [threading.Thread(target=send, args=(i,)) for i in indices]
            for t in threads:
                t.start()
            return threads

        for t in burst(range(len(texts))):
            t.join()
        assert [answers[i] for i in range(len(texts))] == [r["label"] for r in predict(run_dir, texts, None, 64)]
        metrics = httpx.get(f"{base}/metrics").text
        count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("stancerun_batch_size_count")))
        total = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("stancerun_batch_size_sum")))
        assert total == len(texts) and count < len(texts)  # batches formed: fewer passes than requests
        print(f"{len(texts)} requests in {count:.0f} forward passes")

        # SIGTERM while requests wait in the queue (each waits up to 300 ms for company): they are answered.
        answers.clear()
        last = burst(range(8))
        deadline = time.time() + 10
        while len(answers) < 8 and "stancerun_queue_length 8.0" not in httpx.get(f"{base}/metrics").text:
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    for t in last:
        t.join()
    assert [answers[i] for i in range(8)] == [r["label"] for r in predict(run_dir, texts[:8], None, 64)]
    # uvicorn re-raises the signal once it has shut down gracefully
    assert code in (0, -signal.SIGTERM), server.stdout.read()[-3000:]


def test_serve_in_bfloat16_and_refuse_a_dtype_for_an_export(run_dir):
    from fastapi.testclient import TestClient

    from stancerun.rundir.artifacts import load_model
    from stancerun.errors import UsageError
    from stancerun.inference.serve import predictor_for

    with TestClient(create_app(run_dir, Limits(), None, dtype="bfloat16")) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.05)
        assert client.get("/info").json()["dtype"] == "bfloat16"
        answer = client.post("/predict", json={"inputs": TEXTS}).json()
    expected = predict(run_dir, TEXTS, None, 64, saved=load_model(run_dir / "model", dtype="bfloat16"))
    assert [a[0]["label"] for a in answer] == [e["label"] for e in expected]
    export = run_dir.parent / "not-an-export"
    export.mkdir(exist_ok=True)
    (export / "stancerun.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(UsageError, match="--dtype is for a run's torch model"):
        predictor_for(export, "bfloat16")
