"""`stancerun serve` against slow and heavy clients (issue 26, rows 2 and 3): a body that stalls is
a 408 and its connection closed, stalled clients do not keep others waiting, `truncate` bounds a
request's work, and SIGTERM exits within the grace period whatever a client holds open."""

from __future__ import annotations

import socket
import time

import pytest

from stancerun.inference.serve import Limits, create_app
from test_serve import TEXTS, wait_until_healthy
from test_serve_hostile import live_server


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


HALF_BODY = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n" + b'{"inputs":')  # 10 bytes of 1000, then nothing


def read_all(raw: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    return received


def test_a_stalled_body_is_a_408_and_200_stalled_clients_keep_nobody_waiting(run_dir):
    import httpx

    with live_server(create_app(run_dir, Limits(body_timeout=0.5))) as base:
        port = int(base.rsplit(":", 1)[1])
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        try:
            for raw in stalled:
                raw.sendall(HALF_BODY)
            began = time.perf_counter()
            answer = httpx.post(f"{base}/predict", json={"inputs": TEXTS[0]}, timeout=30)
            assert answer.status_code == 200 and time.perf_counter() - began < 5
            for raw in stalled:
                raw.settimeout(30)
                reply = read_all(raw)  # returns: the server closed the connection
                assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
                assert b"--body-timeout" in reply and b"connection: close" in reply.lower()
        finally:
            for raw in stalled:
                raw.close()
        assert httpx.post(f"{base}/predict", json={"inputs": TEXTS[1]}).status_code == 200


def test_truncate_cuts_each_text_before_tokenizing(run_dir):
    from fastapi.testclient import TestClient

    from stancerun.inference.predict import predict
    from stancerun.inference.serve import CHARS_PER_TOKEN, TorchPredictor

    seen: list[list[int]] = []

    class Spy(TorchPredictor):
        def logits(self, texts, pairs):
            seen.append([len(t) for t in texts])
            return super().logits(texts, pairs)

    huge = (TEXTS[0] + " ") * 40_000  # 1.1 MB
    with TestClient(create_app(run_dir, Limits(payload_limit=20_000_000), predictor_factory=Spy)) as client:
        deadline = time.time() + 60
        while client.get("/health").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        cap = client.get("/info").json()["max_input_length"] * CHARS_PER_TOKEN
        answer = client.post("/predict", json={"inputs": [huge] * 10, "truncate": True})
        assert answer.status_code == 200
        assert seen == [[cap] * 10]  # the tokenizer got 10 cut texts, not 11 MB
        cut = client.post("/predict", json={"inputs": [huge[:cap]], "truncate": True}).json()
    for row in answer.json():  # the same answer as for the first cap characters (to float error: batched)
        assert [r["label"] for r in row] == [r["label"] for r in cut[0]]
        assert [r["score"] for r in row] == pytest.approx([r["score"] for r in cut[0]], abs=1e-5)
    whole = predict(run_dir, [huge], None, 64)[0]  # and as stancerun predict gives for the uncut text
    assert cut[0][0]["label"] == whole["label"]
    assert {r["label"]: r["score"] for r in cut[0]} == pytest.approx(whole["probabilities"], abs=1e-5)


def test_sigterm_exits_within_the_grace_period_while_a_client_holds_a_half_sent_body(run_dir):
    import os
    import signal
    import subprocess
    import sys

    from test_distributed import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "stancerun", "serve", str(run_dir), "--port", str(port),
                               "--graceful-timeout", "2", "--body-timeout", "60"],  # the 408 must not be what frees it
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}")
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(HALF_BODY)
            time.sleep(0.3)  # the request is in: its handler waits for the rest of the body
            began = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
            took = time.perf_counter() - began
        assert code in (0, -signal.SIGTERM), server.stdout.read()[-3000:]
        assert 2 <= took < 5, took  # waited the grace period for the client, then no longer
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
