"""`stancerun serve RUN_DIR`: one model in memory behind FastAPI, with dynamic batching.

The request and response shapes are text-embeddings-inference's `/predict`
(``{"inputs": ...}`` -> ``[{"label", "score"}, ...]`` per input, every label, best first;
``raw_scores``, ``truncate``), with one difference users asked TEI for: a flat list is a batch
of texts, and a (target, text) pair is a nested two-item list. A model trained on pairs
requires pairs.

Requests wait at most ``max_wait_ms`` to be joined into one forward pass of at most
``max_batch_size`` texts (length-sorted inside, by the same code as `stancerun predict`). One
inference thread runs the passes, so the event loop never blocks on the model. Errors are
``{"error", "error_type"}``: 408 a body too slow to arrive, 413 too many texts or a text too long, 422 malformed, 429 the
queue is full, 401 a wrong API key; any other failure is a 500 and the server goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, Response

from stancerun.rundir.layout import RunDir


@dataclass
class Limits:
    max_batch_size: int = 32  # texts per forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_client_batch_size: int = 32  # texts per request (TEI's name); more is a 413
    max_queue: int = 512  # requests waiting; more is a 429
    payload_limit: int = 2_000_000  # bytes of a request body (TEI's default); more is a 413, before any parsing
    body_timeout: float = 10.0  # seconds to receive a whole body; slower is a 408 and the connection closed


class RequestError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


# -- the model ------------------------------------------------------------------------------
class TorchPredictor:
    """A run directory's model, as `stancerun predict` loads and applies it."""

    def __init__(self, run_dir: Path, dtype: str = "float32", trust_remote_code: bool = False):
        from stancerun.rundir import artifacts
        from stancerun.inference.predict import inference_device

        self.saved = artifacts.load_model(RunDir(run_dir).model, device=inference_device(), dtype=dtype,
                                          trust_remote_code=trust_remote_code)
        self.dtype = dtype
        self.info = self.saved.info
        self.max_length = self.saved.max_length

    def token_counts(self, texts: list[str], pairs: list[str] | None) -> list[int]:
        args = (pairs, texts) if pairs is not None else (texts,)  # as stancerun.data.batching.encode: the target first
        return [len(ids) for ids in self.saved.tokenizer(*args, truncation=False)["input_ids"]]

    def logits(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        from stancerun.inference.predict import shipped_logits

        return shipped_logits(self.saved, texts, pairs, batch_size=max(1, len(texts)))


class OnnxPredictor:
    """An ONNX export (`stancerun export --onnx`) through onnxruntime: torch is never imported."""

    def __init__(self, export_dir: Path):
        from tokenizers import Tokenizer

        from stancerun.inference.onnx_predict import load_onnx

        self.model = load_onnx(export_dir)
        self.info = self.model.info
        self.max_length = self.model.max_length
        self.counter = None
        tokenizer_file = RunDir(export_dir).tokenizer
        if tokenizer_file.is_file():
            self.counter = Tokenizer.from_file(str(tokenizer_file))  # untruncated: to count
            self.counter.no_truncation()
            self.counter.no_padding()

    def token_counts(self, texts: list[str], pairs: list[str] | None) -> list[int]:
        from stancerun.inference.onnx_predict import joined

        if self.counter is None:  # no tokenizer.json: inputs are cut at max_length as if truncate were asked
            return [0] * len(texts)
        texts, pairs = joined(self.model, texts, pairs)
        inputs = list(zip(pairs, texts)) if pairs is not None else texts
        return [len(e.ids) for e in self.counter.encode_batch(inputs)]

    def logits(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        from stancerun.inference.onnx_predict import onnx_logits

        return onnx_logits(self.model, texts, pairs, batch_size=max(1, len(texts)))


def predictor_for(path: Path, dtype: str = "float32", trust_remote_code: bool = False):
    from stancerun.inference.onnx_predict import check_model_dir

    return OnnxPredictor(path) if check_model_dir(path, dtype) else TorchPredictor(path, dtype, trust_remote_code)


def run_summary(run_dir: Path) -> dict:
    """The run's headline figures for /info (validation, and test when the run had one)."""
    from stancerun.inference.onnx_predict import read_info

    exported = (read_info(run_dir) or {}).get("exported_from")  # an ONNX export: its run's figures
    found = RunDir(exported or run_dir)
    if not found.results.is_file():
        return {}
    keep = ("accuracy", "f1_macro", "f1_favor_against")
    return {split: {k: v for k, v in scores.items() if k in keep} for split, scores in found.read_results().shipped_scores().items()}


# -- dynamic batching -----------------------------------------------------------------------
@dataclass
class Job:
    texts: list[str]
    pairs: list[str] | None
    raw: bool
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    truncate: bool = False
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """A queue of requests and the one thread that runs them in batches."""

    def __init__(self, predictor, limits: Limits, metrics):
        self.predictor, self.limits, self.metrics = predictor, limits, metrics
        self.jobs: collections.deque[Job] = collections.deque()
        self.ready = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self.loop, name="stancerun-inference", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.ready:
            if self.closing:
                raise RequestError(503, "Unhealthy", "the server is shutting down")
            if len(self.jobs) >= self.limits.max_queue:
                raise RequestError(429, "Overloaded", f"the queue is full ({self.limits.max_queue} requests waiting)")
            self.jobs.append(job)
            self.metrics.queue.set(len(self.jobs))
            self.ready.notify()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self.ready:
            self.closing = True
            self.ready.notify()
        self.thread.join()

    def next_batch(self) -> list[Job] | None:
        limit, wait = self.limits.max_batch_size, self.limits.max_wait_ms / 1000
        with self.ready:
            while not self.jobs:
                if self.closing:
                    return None
                self.ready.wait()
            deadline = self.jobs[0].enqueued + wait
            while sum(len(j.texts) for j in self.jobs) < limit and not self.closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.ready.wait(remaining)
            batch = [self.jobs.popleft()]
            size = len(batch[0].texts)
            # Requests that fit, in arrival order; pairs and plain texts never share a pass.
            while self.jobs and size + len(self.jobs[0].texts) <= limit and \
                    (self.jobs[0].pairs is None) == (batch[0].pairs is None):
                job = self.jobs.popleft()
                batch.append(job)
                size += len(job.texts)
            self.metrics.queue.set(len(self.jobs))
            return batch

    def loop(self) -> None:
        while (batch := self.next_batch()) is not None:
            self.run(batch)

    def run(self, batch: list[Job]) -> None:
        """One forward pass for the batch. If it fails, one pass per request: a request whose input
        breaks the pass then fails alone (a 500) and the others are answered. The thread goes on."""
        try:
            batch = self.refuse_too_long(batch)
            answers = self.forward(batch) if batch else []
        except Exception as error:
            if len(batch) > 1:
                for job in batch:
                    self.run([job])
                return
            batch[0].loop.call_soon_threadsafe(settle, batch[0].future, None, error)
            return
        for job, answer in zip(batch, answers):
            job.loop.call_soon_threadsafe(settle, job.future, answer, None)

    def forward(self, batch: list[Job]) -> list:
        texts = [t for job in batch for t in job.texts]
        pairs = [p for job in batch for p in job.pairs] if batch[0].pairs is not None else None
        self.metrics.batch_size.observe(len(texts))
        logits = self.predictor.logits(texts, pairs)
        answers, start = [], 0
        for job in batch:
            answers.append(scores(logits[start:start + len(job.texts)], self.predictor.info, job.raw))
            start += len(job.texts)
        return answers

    def refuse_too_long(self, batch: list[Job]) -> list[Job]:
        """Answer 413 to requests with an input longer than the model reads (unless they asked to
        truncate); the rest go on. In this thread, not the event loop's: the model and the
        tokenizer take the cores in turn."""
        strict = [job for job in batch if not job.truncate]
        if not strict:
            return batch
        limit = self.predictor.max_length
        counts = self.predictor.token_counts([t for j in strict for t in j.texts],
                                             [p for j in strict for p in j.pairs] if strict[0].pairs is not None else None)
        refused, start = set(), 0
        for job in strict:
            longest = max(counts[start:start + len(job.texts)])
            start += len(job.texts)
            if longest > limit:
                refused.add(id(job))
                error = RequestError(413, "Validation", f"an input has {longest} tokens; this model reads at most "
                                                        f"{limit} (send \"truncate\": true to cut it)")
                job.loop.call_soon_threadsafe(settle, job.future, None, error)
        return [job for job in batch if id(job) not in refused]


def settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def scores(logits: np.ndarray, info: dict, raw: bool) -> list[list[dict]]:
    """Every label with its probability (or raw score), best first, per input."""
    from stancerun.evaluation.stats import softmax

    values = logits if raw else softmax(logits, info.get("temperature", 1.0))
    labels = info["labels"]
    return [[{"label": labels[i], "score": float(row[i])} for i in np.argsort(-row, kind="stable")] for row in values]


# -- requests -------------------------------------------------------------------------------
MAX_DEPTH = 64  # JSON nesting a body may have; a /predict body needs 3
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting(body: bytes) -> int:
    """How deep the body's arrays and objects nest, counted before parsing: json.loads recurses,
    and 2,000 levels were a RecursionError. Brackets inside strings do not count."""
    brackets = JSON_STRING.sub(b"", body).translate(None, NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)).max())


def check_encodable(items: list) -> None:
    """A 422 naming the first input that is not UTF-8 text (JSON can carry a lone surrogate such as
    "\\ud800"; the tokenizer cannot, and in a shared forward pass it failed every request)."""
    for index, item in enumerate(items):
        for text in item if isinstance(item, list) else [item]:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise RequestError(422, "Validation", f"input {index}: not valid Unicode text ({error.reason} at "
                                                      f"character {error.start})") from None


CHARS_PER_TOKEN = 32  # generous: English averages about 4 characters a token, and a token of 32 is rare


def bounded(texts: list[str] | None, max_length: int | None) -> list[str] | None:
    """Each text cut to max_length x CHARS_PER_TOKEN characters, for a request that asked to
    truncate: the model reads only the first max_length tokens, which lie well inside the cut,
    so the answer is the same, and tokenizing 10 texts of 1 MB costs what 10 normal texts cost
    (32 texts of 1 MB held the inference thread 30 s)."""
    if texts is None or not max_length:
        return texts
    cap = max_length * CHARS_PER_TOKEN
    return [text[:cap] for text in texts]


def parse(body: bytes, pair_column: str | None, limits: Limits) -> tuple[list[str], list[str] | None, bool, bool, bool]:
    """(texts, pairs, single input?, raw_scores, truncate) from a /predict body, or a RequestError."""
    if nesting(body) > MAX_DEPTH:
        raise RequestError(422, "Validation", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(422, "Validation", f"malformed JSON: {error}") from None
    except RecursionError:  # a bound only: nesting() already refused what is this deep
        raise RequestError(422, "Validation", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(422, "Validation", 'expected a JSON object {"inputs": ...}')
    raw, truncate = payload.get("raw_scores", False), payload.get("truncate", False)
    if not isinstance(raw, bool) or not isinstance(truncate, bool):
        raise RequestError(422, "Validation", "raw_scores and truncate are true or false")
    inputs = payload["inputs"]
    single = isinstance(inputs, str)
    items = [inputs] if single else inputs
    if not isinstance(items, list) or not items:
        raise RequestError(422, "Validation", "inputs: a text, a list of texts, or a list of [target, text] pairs")
    if len(items) > limits.max_client_batch_size:
        raise RequestError(413, "Validation", f"{len(items)} inputs in one request; at most "
                                              f"{limits.max_client_batch_size} (--max-client-batch-size)")
    is_pair = [isinstance(i, list) and len(i) == 2 and all(isinstance(s, str) for s in i) for i in items]
    is_text = [isinstance(i, str) for i in items]
    if all(is_pair) or all(is_text):
        check_encodable(items)
    if pair_column:
        if not all(is_pair):
            raise RequestError(422, "Validation", f"this model classifies ({pair_column}, text) pairs: send "
                                                  f'{{"inputs": [["{pair_column} value", "text"], ...]}}')
        return [i[1] for i in items], [i[0] for i in items], False, raw, truncate
    if not all(is_text):
        raise RequestError(422, "Validation", "this model classifies single texts: send a text or a list of texts "
                                              "(it was not trained on pairs)")
    return list(items), None, single, raw, truncate


# -- metrics --------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("stancerun_requests", "Requests to /predict by status code", ["status"],
                                registry=self.registry)
        self.inputs = Counter("stancerun_inputs", "Texts classified", registry=self.registry)
        self.latency = Histogram("stancerun_request_seconds", "Time to answer a /predict request",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.batch_size = Histogram("stancerun_batch_size", "Texts per forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue = Gauge("stancerun_queue_length", "Requests waiting for a forward pass", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# -- the app --------------------------------------------------------------------------------
CLIENT_CLOSED = 499  # nginx's code for a client that closed the connection first: counted apart from 500s


def public_name(model: str | None) -> str | None:
    """A base model for /info: a hub id as it is, a local folder by its name only (no path of
    this machine goes out)."""
    if not model:
        return model
    path = Path(model).expanduser()
    if path.is_absolute() or model.startswith((".", "~")) or path.exists():
        return path.resolve().name
    return model


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


class Server:
    """One app's state and its handlers: the model's batcher once it has loaded (or why it failed
    to), the limits, the API key and the metrics."""

    def __init__(self, run_dir: Path, limits: Limits, api_key: str | None, factory):
        self.run_dir, self.limits, self.api_key, self.factory = run_dir, limits, api_key, factory
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.error: str | None = None

    def load(self) -> None:
        try:
            predictor = self.factory(self.run_dir)
            batcher = Batcher(predictor, self.limits, self.metrics)
            batcher.start()
            self.batcher = batcher
        except Exception as error:  # the log and /info (behind the key) say why; /health only that it failed
            self.error = f"{type(error).__name__}: {error}"
            print(f"error: the model failed to load: {self.error}", file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        loader = threading.Thread(target=self.load, name="stancerun-load", daemon=True)
        loader.start()
        yield
        # SIGTERM: uvicorn has stopped accepting and waited for open requests; finish the queue.
        await asyncio.get_running_loop().run_in_executor(None, loader.join)
        if self.batcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.batcher.close)

    async def unexpected(self, request: Request, exc: Exception):  # no request crashes the server
        return error_response(500, "Backend", f"{type(exc).__name__}: {exc}")

    async def health(self):
        if self.batcher is not None:
            return {"status": "ok"}
        if self.error:
            # /health answers anyone: the error may name local paths, so it stays in the log and /info
            return error_response(503, "Unhealthy", "the model failed to load (the server's log says why)")
        return error_response(503, "Unhealthy", "the model is loading")

    async def info(self, request: Request):
        try:
            self.check_key(request)
        except RequestError as failure:
            return error_response(failure.status, failure.error_type, failure.message)
        if self.batcher is None:
            return error_response(503, "Unhealthy", self.error or "the model is loading")
        predictor, limits = self.batcher.predictor, self.limits
        model_info = predictor.info
        return {"model_id": self.run_dir.resolve().name, "labels": model_info["labels"],
                "base_model": public_name(model_info.get("components", {}).get("model", {}).get("options", {}).get("name")
                                          or model_info.get("source")),
                "text_pair_column": model_info.get("text_pair_column"), "max_input_length": predictor.max_length,
                "dtype": getattr(predictor, "dtype", model_info.get("quantized") or "float32"),
                "max_batch_size": limits.max_batch_size, "max_client_batch_size": limits.max_client_batch_size,
                "max_wait_ms": limits.max_wait_ms, "max_queue": limits.max_queue,
                "payload_limit": limits.payload_limit, "run": run_summary(self.run_dir)}

    async def prometheus(self):
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def predict(self, request: Request):
        from starlette.requests import ClientDisconnect

        began = time.perf_counter()
        try:
            response = await self.answer(request)
        except ClientDisconnect:  # the client left before its body was sent: its fault, not a 500
            response = Response(status_code=CLIENT_CLOSED)
        except RequestError as failure:
            response = error_response(failure.status, failure.error_type, failure.message)
            if failure.status == 408:  # the rest of a stalled body is not waited for: the connection goes
                response.headers["Connection"] = "close"
        except Exception as failure:  # a failed forward pass: this request fails, the server goes on
            response = error_response(500, "Backend", f"{type(failure).__name__}: {failure}")
        self.metrics.requests.labels(status=str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - began)
        return response

    def check_key(self, request: Request) -> None:
        if self.api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                raise RequestError(401, "Unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")

    async def read_body(self, request: Request) -> bytes:
        """The body, or a 408 when it has not all come within --body-timeout: a client that stalls
        mid-body held its connection open for good, and kept SIGTERM waiting."""
        try:
            return await asyncio.wait_for(self.read_limited(request), self.limits.body_timeout)
        except asyncio.TimeoutError:
            raise RequestError(408, "Timeout", f"the body did not arrive within {self.limits.body_timeout:g} s "
                                               "(--body-timeout)") from None

    async def read_limited(self, request: Request) -> bytes:
        """The body, refused with a 413 past --payload-limit: from Content-Length before a byte is
        read, and while a body without it streams in (a 50 MB body took 4.7 GB to parse)."""
        limit = self.limits.payload_limit
        refusal = f"the body is larger than {limit} bytes (--payload-limit)"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "Validation", refusal)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "Validation", refusal)
            chunks.append(chunk)
        return b"".join(chunks)

    async def answer(self, request: Request):
        self.check_key(request)
        batcher = self.batcher
        if batcher is None:
            raise RequestError(503, "Unhealthy", self.error or "the model is loading")
        texts, pairs, single, raw, truncate = parse(await self.read_body(request),
                                                    batcher.predictor.info.get("text_pair_column"), self.limits)
        if truncate:
            max_length = batcher.predictor.max_length
            texts, pairs = bounded(texts, max_length), bounded(pairs, max_length)
        loop = asyncio.get_running_loop()
        job = Job(texts, pairs, raw, loop.create_future(), loop, truncate)
        batcher.submit(job)
        result = await job.future
        self.metrics.inputs.inc(len(texts))
        return JSONResponse(result[0] if single else result)


def create_app(run_dir: Path, limits: Limits | None = None, api_key: str | None = None, predictor_factory=None,
               dtype: str = "float32", trust_remote_code: bool = False):
    """The FastAPI app. The model loads in a thread when the app starts; /health is 503 until then."""
    from fastapi import FastAPI

    server = Server(run_dir, limits or Limits(), api_key,
                    predictor_factory or (lambda path: predictor_for(path, dtype, trust_remote_code)))
    app = FastAPI(title="stancerun", lifespan=server.lifespan, docs_url=None, redoc_url=None)
    app.exception_handler(Exception)(server.unexpected)
    app.get("/health")(server.health)
    app.get("/info")(server.info)
    app.get("/metrics")(server.prometheus)
    app.post("/predict")(server.predict)
    return app


def serve(run_dir: Path, host: str, port: int, limits: Limits, api_key: str | None, dtype: str = "float32",
          trust_remote_code: bool = False, graceful_timeout: float = 30.0) -> None:
    import uvicorn

    from stancerun.inference.onnx_predict import check_model_dir
    from stancerun.rundir import artifacts

    if not check_model_dir(run_dir, dtype):  # here, not only in the loading thread: bad input exits 2 before uvicorn starts
        artifacts.check_saved_model(RunDir(run_dir).model, trust_remote_code)
    # Before torch loads. OpenMP's threads spin after each parallel region by default, taking the
    # cores from the event loop's thread between passes: under load the server answered 8 requests/s
    # spinning and 100 passive (benchmarks/serve.py, 2 cores). The inference thread tokenizes and runs
    # the model in turn, so the tokenizer's own thread pool would only compete with torch's too.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One event loop, one inference thread; uvicorn handles SIGTERM: stop accepting, finish open requests,
    # and after graceful_timeout cancel those still open (a client holding a half-sent body kept it waiting
    # for good); then the lifespan answers what is queued.
    uvicorn.run(create_app(run_dir, limits, api_key, dtype=dtype, trust_remote_code=trust_remote_code), host=host,
                port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_timeout)
