"""`stancerun serve` against hostile and unlucky clients (issue 26): one bad request harms nobody
else, deep JSON is a 422, a client that leaves mid-body is not a server error, /info gives out no
path and needs the key when one is set. The real uvicorn server runs in a thread of this process."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

from stancerun.inference.predict import predict
from stancerun.inference.serve import Limits, TorchPredictor, create_app
from test_serve import TEXTS, client_for, until_healthy


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


@contextlib.contextmanager
def live_server(app):
    """uvicorn on a free port of 127.0.0.1, in a thread; yields its base URL once /health is 200."""
    import uvicorn

    from test_distributed import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        def alive() -> None:
            assert thread.is_alive()

        until_healthy(base, alive, 60, pause=0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def together(base: str, bodies: list[bytes]) -> list:
    """POST every body to /predict at once (each from its own thread); the answers in order."""
    import httpx

    answers: list = [None] * len(bodies)

    def send(i: int) -> None:
        answers[i] = httpx.post(f"{base}/predict", content=bodies[i], timeout=60,
                                headers={"Content-Type": "application/json"})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def body(text: str) -> bytes:
    import json

    return json.dumps({"inputs": [text]}).encode()  # ensure_ascii: a lone surrogate goes as "\ud800"


def test_a_lone_surrogate_fails_only_its_own_request(run_dir):
    expected = [r["label"] for r in predict(run_dir, TEXTS, None, 64)]
    with live_server(create_app(run_dir, Limits(max_wait_ms=300))) as base:
        answers = together(base, [body(TEXTS[0]), body("ok \ud800"), body(TEXTS[1]), body(TEXTS[2])])
    bad = answers.pop(1)
    assert bad.status_code == 422 and bad.json()["error"].startswith("input 0: not valid Unicode text")
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()[0][0]["label"] for a in answers] == expected


def test_a_pass_that_fails_for_one_text_is_retried_request_by_request(run_dir):
    import httpx

    class Poisoned(TorchPredictor):
        def logits(self, texts, pairs):
            if "poison" in texts:
                raise RuntimeError("the tokenizer choked")
            return super().logits(texts, pairs)

    expected = [r["label"] for r in predict(run_dir, TEXTS, None, 64)]
    # a pass closes when 4 texts are in: the four requests share the first one
    with live_server(create_app(run_dir, Limits(max_wait_ms=10_000, max_batch_size=4), predictor_factory=Poisoned)) as base:
        answers = together(base, [body(TEXTS[0]), body(TEXTS[1]), body("poison"), body(TEXTS[2])])
        metrics = httpx.get(f"{base}/metrics").text
    bad = answers.pop(2)
    assert bad.status_code == 500 and bad.json() == {"error": "RuntimeError: the tokenizer choked", "error_type": "Backend"}
    assert [a.json()[0][0]["label"] for a in answers] == expected
    # one shared pass of 4 texts (it failed), then one pass per request
    assert "stancerun_batch_size_count 5.0" in metrics and "stancerun_batch_size_sum 8.0" in metrics


def test_json_nested_deeper_than_64_is_a_422_and_the_server_goes_on(run_dir):
    client = client_for(run_dir)
    for depth in (2000, 65):
        deep = b'{"inputs": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        answer = client.post("/predict", content=deep)
        assert answer.status_code == 422 and answer.json()["error"] == "JSON nested deeper than 64 levels"
    brackets_in_a_string = {"inputs": "[" * 5000 + "{" * 5000 + '\\"', "truncate": True}  # text, not nesting
    assert client.post("/predict", json=brackets_in_a_string).status_code == 200
    assert client.post("/predict", json={"inputs": TEXTS[0]}).status_code == 200
    client.__exit__(None, None, None)


def test_a_client_that_leaves_mid_body_is_counted_apart_from_server_errors(run_dir):
    import httpx

    with live_server(create_app(run_dir, Limits())) as base:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n" + b'{"inputs":')  # 10 bytes of 1000, then gone
        deadline = time.time() + 10
        while 'stancerun_requests_total{status="499"} 2.0' not in (metrics := httpx.get(f"{base}/metrics").text):
            assert time.time() < deadline, metrics
            time.sleep(0.05)
        assert 'status="500"' not in metrics
        assert httpx.post(f"{base}/predict", json={"inputs": TEXTS[0]}).status_code == 200


def test_info_needs_the_key_and_shows_no_local_path(run_dir, tiny_bert):
    client = client_for(run_dir, api_key="s3cret")
    assert client.get("/info").status_code == 401
    assert client.get("/info", headers={"Authorization": "Bearer nope"}).json()["error_type"] == "Unauthorized"
    answer = client.get("/info", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200
    info = answer.json()
    assert info["base_model"] == tiny_bert.name and info["model_id"] == run_dir.name  # folder names only
    assert str(tiny_bert) not in answer.text and str(run_dir) not in answer.text
    assert not [v for v in strings(info) if os.path.isabs(v)]
    client.__exit__(None, None, None)
    open_client = client_for(run_dir)  # no key set: /info stays open
    assert open_client.get("/info").status_code == 200
    open_client.__exit__(None, None, None)


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_a_hub_id_stays_as_it_is():
    from stancerun.inference.serve import public_name

    assert public_name("distilbert-base-uncased") == "distilbert-base-uncased"
    assert public_name("cardiffnlp/twitter-roberta-base") == "cardiffnlp/twitter-roberta-base"
    assert public_name("/home/me/models/my-bert") == "my-bert" and public_name(None) is None


def test_a_text_the_tokenizer_refuses_in_a_shared_pass_fails_its_request_only(run_dir, monkeypatch):
    from stancerun.inference import serve

    monkeypatch.setattr(serve, "check_encodable", lambda items: None)  # as if the request-time check missed it
    expected = [r["label"] for r in predict(run_dir, TEXTS, None, 64)]
    with live_server(create_app(run_dir, Limits(max_wait_ms=10_000, max_batch_size=4))) as base:
        answers = together(base, [body(TEXTS[0]), body(TEXTS[1]), body(TEXTS[2]), body("ok \ud800")])
    bad = answers.pop()
    assert bad.status_code == 500 and bad.json()["error"].startswith("TypeError")  # the real tokenizer's refusal
    assert [a.json()[0][0]["label"] for a in answers] == expected


def test_a_body_past_the_payload_limit_is_a_413_before_parsing(run_dir):
    client = client_for(run_dir, payload_limit=1000)
    big = {"inputs": ["w " * 600]}  # 1,200 bytes and more
    declared = client.post("/predict", json=big)
    assert declared.status_code == 413 and declared.json()["error"] == "the body is larger than 1000 bytes (--payload-limit)"
    streamed = client.post("/predict", content=iter([b'{"inputs": ["', b"w " * 600, b'"]}']))  # chunked: no Content-Length
    assert streamed.status_code == 413 and "--payload-limit" in streamed.json()["error"]
    assert client.post("/predict", content=iter([b'{"inputs": ', b'"fine"}'])).status_code == 200
    assert client.get("/info").json()["payload_limit"] == 1000
    client.__exit__(None, None, None)


def test_a_model_that_fails_to_load_says_why_in_the_log_and_behind_the_key_not_on_health(tmp_path, capfd):
    from fastapi.testclient import TestClient

    secret_path = tmp_path / "private" / "weights.safetensors"

    def broken(run_dir):
        raise OSError(f"{secret_path}: truncated")

    with TestClient(create_app(tmp_path, Limits(), "s3cret", predictor_factory=broken)) as client:
        deadline = time.time() + 30
        while "failed" not in client.get("/health").text:
            assert time.time() < deadline
            time.sleep(0.05)
        health = client.get("/health")
        assert health.status_code == 503 and str(secret_path) not in health.text and "log" in health.text
        info = client.get("/info", headers={"Authorization": "Bearer s3cret"})
        assert info.status_code == 503 and str(secret_path) in info.text
    assert f"the model failed to load: OSError: {secret_path}: truncated" in capfd.readouterr().err
