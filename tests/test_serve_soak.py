"""`stancerun serve` soaked (issue 26): for 45 s, 64 clients at once on 127.0.0.1 send a seeded
mix of good requests and hostile ones (malformed JSON, wrong types, lone surrogates, deep JSON, too
many inputs, a text too long, bodies past --payload-limit with and without Content-Length, bodies
that stall, clients that leave mid-body or before their answer). Every good request must get 200
and the answer its text got alone, no request a 5xx, each hostile one its 4xx (or a closed
connection where the server refused a body before reading it all), /metrics must count what was
sent, and the server's RSS may grow at most 300 MB past its RSS after warm-up."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import aiohttp
import psutil
import pytest

from conftest import stance_rows
from test_serve import wait_until_healthy

SEED = 26
CONCURRENCY = 64
SOAK_SECONDS = 45
REQUEST_TIMEOUT = 60  # seconds: no await of a client waits longer; a request that needs it is a failure
PAYLOAD_LIMIT = 200_000  # small, so that an oversized body costs the shared cores little to send
BODY_TIMEOUT = 2.0  # a stalled client holds one of the 64 slots this long, then gets its 408
RSS_GROWTH_LIMIT = 300 * 2**20
MAX_QUEUE = 4 * CONCURRENCY  # a good request waits behind at most 63 others: the queue never answers 429 here
SERVER_ARGS = ["--payload-limit", str(PAYLOAD_LIMIT), "--body-timeout", str(BODY_TIMEOUT),
               "--max-queue", str(MAX_QUEUE), "--graceful-timeout", "5"]
JSON = {"Content-Type": "application/json"}
MB = 2**20

# kind: (weight in the mix, what the client may see, what /metrics counts it as)
GOOD = {"one": 25, "batch": 25, "raw": 6, "truncated": 6}
HOSTILE = {
    "malformed": (4, {422}, "422"), "wrong_type": (4, {422}, "422"), "surrogate": (4, {422}, "422"),
    "deep": (3, {422}, "422"), "too_many": (3, {413}, "413"), "too_long": (3, {413}, "413"),
    # refused from Content-Length, or part-way through a chunked body: the server may close the
    # connection while the client is still sending, so the client may never read its 413
    "oversized": (3, {413, "closed"}, "413"), "oversized_chunked": (3, {413, "closed"}, "413"),
    "stall": (1, {408}, "408"),
    "leave_mid_body": (3, {"left"}, "499"),
    # its whole body was sent: the server may have read it (a 200 into a closed socket) or see the
    # disconnect first (499)
    "leave_before_answer": (2, {"left"}, "200 or 499"),
}


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


# -- what the clients send ------------------------------------------------------------------
def dumps(payload) -> bytes:
    return json.dumps(payload).encode()  # ensure_ascii: a lone surrogate goes as "\ud800"


def text_pools() -> tuple[list[str], list[str]]:
    """Short texts (the tiny model reads 32 tokens: these fit) and long ones (sent with truncate)."""
    short = sorted({row["text"] for row in stance_rows(60, seed=SEED)})
    return short, [" ".join([text] * 40) for text in short[:8]]


def good_payload(kind: str, rng: random.Random, short: list[str], long: list[str]) -> dict:
    if kind == "one":
        return {"inputs": rng.choice(short)}
    if kind == "raw":
        return {"inputs": rng.sample(short, rng.randint(1, 4)), "raw_scores": True}
    if kind == "truncated":
        return {"inputs": rng.sample(long, rng.randint(1, 3)) + rng.sample(short, rng.randint(0, 2)), "truncate": True}
    return {"inputs": rng.sample(short, rng.randint(2, 12))}  # "batch"


def hostile_body(kind: str, rng: random.Random, short: list[str], long: list[str]) -> bytes:
    text = rng.choice(short)
    if kind == "malformed":
        whole = dumps({"inputs": [text]})
        return rng.choice([whole[:rng.randint(1, len(whole) - 1)], b"{inputs: 1}", b"\xff\xfe\x00", b"", b"[]]"])
    if kind == "wrong_type":  # the last two: pairs to a model trained without them; not an object
        return dumps(rng.choice([{"inputs": [1, 2]}, {"inputs": {"a": text}}, {"inputs": []}, {"input": text},
                                 {"inputs": text, "raw_scores": "yes"}, {"inputs": [["tax", text]]}, text]))
    if kind == "surrogate":
        return dumps({"inputs": [text, text[:3] + "\ud800" + text[3:]]})
    if kind == "deep":
        depth = rng.randint(65, 2000)
        return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "too_many":
        return dumps({"inputs": [text] * rng.randint(33, 100)})
    if kind == "too_long":  # past the model's 32 tokens, without truncate
        return dumps({"inputs": [rng.choice(long)]})
    raise AssertionError(kind)


def head(port: int, length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


# -- the clients ----------------------------------------------------------------------------
class Soak:
    """64 clients' sessions, what a text alone is answered (from the warm-up), and the tallies."""

    def __init__(self, base: str, port: int, sessions):
        self.base, self.port = base, port
        self.good_session, self.hostile_session = sessions  # hostile requests never share a good one's connection
        self.short, self.long = text_pools()
        self.alone: dict[tuple[str, bool], list[dict]] = {}
        self.tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.wrong: list[str] = []  # good requests answered wrongly
        self.texts_answered = 0
        self.texts_left = 0  # texts in requests whose clients left before the answer
        self.oversized = [b'{"inputs": ["' + b"w " * (size // 2) + b'"]}' for size in (250_000, 600_000, 1_500_000)]

    async def learn_answers_alone(self) -> None:
        """Each text sent alone, one request at a time: the answer a batched one must match. A text whose
        two best labels lie within 1e-3 leaves the pool: float noise could order them either way."""
        for text in self.short + self.long:
            for raw in (False, True):
                payload = {"inputs": text, "raw_scores": raw, "truncate": text in self.long}
                async with self.good_session.post(f"{self.base}/predict", data=dumps(payload), headers=JSON) as reply:
                    assert reply.status == 200, await reply.text()
                    self.alone[text, raw] = await reply.json()
        close = {text for text in self.short + self.long
                 if self.alone[text, False][0]["score"] - self.alone[text, False][1]["score"] < 1e-3}
        self.short = [t for t in self.short if t not in close]
        self.long = [t for t in self.long if t not in close]
        assert len(self.short) >= 30 and len(self.long) >= 4, close

    async def send(self, kind: str, rng: random.Random):
        if kind in GOOD:
            return await self.good(good_payload(kind, rng, self.short, self.long))
        if kind in ("stall", "leave_mid_body", "leave_before_answer"):
            return await getattr(self, kind)(rng)
        if kind == "oversized":
            body = rng.choice(self.oversized)
        elif kind == "oversized_chunked":
            body = chunks(rng.choice(self.oversized))  # an async iterable: aiohttp sends it chunked, no Content-Length
        else:
            body = hostile_body(kind, rng, self.short, self.long)
        try:
            async with self.hostile_session.post(f"{self.base}/predict", data=body, headers=JSON) as reply:
                await reply.read()
                return reply.status
        except (OSError, aiohttp.ClientError):
            return "closed"

    async def good(self, payload: dict):
        async with self.good_session.post(f"{self.base}/predict", data=dumps(payload), headers=JSON) as reply:
            if reply.status != 200:
                self.wrong.append(f"{reply.status} {(await reply.text())[:200]} for {payload}")
                return reply.status
            answer = await reply.json()
        texts = payload["inputs"]
        rows = [answer] if isinstance(texts, str) else answer
        texts = [texts] if isinstance(texts, str) else texts
        if len(rows) != len(texts):
            self.wrong.append(f"{len(rows)} answers to {len(texts)} inputs")
        for text, row in zip(texts, rows):
            self.check(row, self.alone[text, payload.get("raw_scores", False)], text)
        self.texts_answered += len(texts)
        return 200

    def check(self, row: list[dict], alone: list[dict], text: str) -> None:
        """The same best label, and every label's score within 1e-4 of the answer the text got alone
        (a batch pads it beside others: float noise, no more)."""
        scores, expected = {r["label"]: r["score"] for r in row}, {r["label"]: r["score"] for r in alone}
        if row[0]["label"] != alone[0]["label"] or scores.keys() != expected.keys() or \
                any(abs(scores[label] - expected[label]) > 1e-4 for label in expected):
            self.wrong.append(f"{text!r}: {row} batched, {alone} alone")

    async def stall(self, rng: random.Random):
        """10 bytes of a 1,000-byte body, then nothing: a 408 after --body-timeout, and the connection closed."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(head(self.port, 1000) + b'{"inputs":')
            await writer.drain()
            reply = await reader.read()  # until the server closes the connection
            return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else f"garbled: {reply[:80]!r}"
        finally:
            writer.close()

    async def leave_mid_body(self, rng: random.Random):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head(self.port, 1000) + b'{"inputs": ["' + rng.choice(self.short).encode())
        await writer.drain()
        writer.close()
        return "left"

    async def leave_before_answer(self, rng: random.Random):
        body = dumps({"inputs": rng.sample(self.short, 2)})
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head(self.port, len(body)) + body)
        await writer.drain()
        writer.close()
        self.texts_left += 2
        return "left"

    async def client(self, number: int, mix: dict[str, int], more) -> None:
        """One of the 64: a seeded sequence of requests while more(requests sent) says so."""
        rng = random.Random(SEED * 1000 + number)
        kinds, weights = list(mix), list(mix.values())
        sent = 0
        while more(sent):
            kind = rng.choices(kinds, weights)[0]
            try:
                outcome = await asyncio.wait_for(self.send(kind, rng), REQUEST_TIMEOUT)
            except asyncio.TimeoutError:
                outcome = f"no answer in {REQUEST_TIMEOUT} s"
            except Exception as error:  # a good request's connection dropped, or a raw client's
                outcome = f"{type(error).__name__}: {error}"
            self.tally[kind][outcome] += 1
            sent += 1

    async def clients(self, mix: dict[str, int], more) -> None:
        await asyncio.gather(*(self.client(number, mix, more) for number in range(CONCURRENCY)))


async def chunks(body: bytes):
    for start in range(0, len(body), 65536):
        yield body[start:start + 65536]


# -- the server -----------------------------------------------------------------------------
def rss(pid: int) -> int:
    """The server's resident memory: the process `stancerun serve` runs in (uvicorn forks no worker
    here; any child it had would count too)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def requests_counted(metrics: str) -> dict[str, int]:
    counted = re.findall(r'^stancerun_requests_total\{status="(\d+)"\} (\S+)$', metrics, re.MULTILINE)
    return {status: int(float(n)) for status, n in counted}


def metric(metrics: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE).group(1))


async def soak(base: str, port: int, pid: int) -> dict:
    """Warm-up, the RSS, 45 s of the mix, the RSS again; what /health and /metrics say after."""
    asyncio.get_running_loop().set_exception_handler(quiet_refused_uploads)
    good_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                         timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
    hostile_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True),
                                            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
    async with good_session, hostile_session:
        run = Soak(base, port, (good_session, hostile_session))
        await run.learn_answers_alone()
        await run.clients(GOOD, lambda sent: sent < 5)  # 320 good requests, batched as in the soak
        warm = {"rss": rss(pid), "tally": run.tally, "wrong": run.wrong, "texts": run.texts_answered}
        run.tally, run.wrong, run.texts_answered = collections.defaultdict(collections.Counter), [], 0
        began = time.monotonic()
        deadline = began + SOAK_SECONDS
        mix = {**GOOD, **{kind: weight for kind, (weight, _, _) in HOSTILE.items()}}
        await run.clients(mix, lambda sent: time.monotonic() < deadline)
        seconds = time.monotonic() - began
        after = rss(pid)
        async with hostile_session.get(f"{base}/health") as reply:  # a fresh connection: none idle past keep-alive
            health = reply.status
        expected = expected_counts(warm["tally"], run.tally, len(run.alone))
        wait_until = time.monotonic() + 10  # a client that left is counted once the server notices
        while True:
            async with hostile_session.get(f"{base}/metrics") as reply:
                metrics = await reply.text()
            if settled(requests_counted(metrics), expected) or time.monotonic() > wait_until:
                break
            await asyncio.sleep(0.1)
    return {"warm": warm, "tally": run.tally, "wrong": run.wrong, "seconds": seconds, "rss_after": after,
            "health": health, "metrics": metrics, "expected": expected, "texts": run.texts_answered,
            "texts_left": run.texts_left, "alone": len(run.alone)}


def quiet_refused_uploads(loop, context) -> None:
    """aiohttp's task that writes a chunked body fails unheard when the server refuses the body and
    closes the connection: that is the 413 path working, not an error of the test."""
    if not isinstance(context.get("exception"), ConnectionResetError):  # aiohttp's ClientConnectionResetError is one
        loop.default_exception_handler(context)


def expected_counts(warm_tally, tally, alone: int) -> dict[str, int]:
    """How many requests /metrics should count per status: "200 or 499" are the clients that left
    after sending their whole body."""
    counts = collections.Counter({"200": alone + sum(sum(c.values()) for c in warm_tally.values())})
    for kind, outcomes in tally.items():
        counts[HOSTILE[kind][2] if kind in HOSTILE else "200"] += sum(outcomes.values())
    return dict(counts)


def settled(counted: dict[str, int], expected: dict[str, int]) -> bool:
    """/metrics counts each status as expected; of the clients that left after their whole body, some
    answered 200 and the rest 499."""
    either = expected.get("200 or 499", 0)
    plain = {k: v for k, v in expected.items() if k not in ("200", "499", "200 or 499")}
    if {k: v for k, v in counted.items() if k not in ("200", "499")} != plain:
        return False
    left_answered = counted.get("200", 0) - expected.get("200", 0)
    return 0 <= left_answered <= either and counted.get("499", 0) == expected.get("499", 0) + either - left_answered


def summary(report: dict) -> str:
    tally = "; ".join(f"{kind} {dict(sorted(outcomes.items(), key=str))}"
                      for kind, outcomes in sorted(report["tally"].items()))
    total = sum(sum(c.values()) for c in report["tally"].values())
    return (f"soak: {total} requests in {report['seconds']:.0f} s at concurrency {CONCURRENCY} ({tally}); RSS "
            f"{report['warm']['rss'] / MB:.0f} MB after warm-up, {report['rss_after'] / MB:.0f} MB after the soak")


@pytest.fixture
def server(run_dir):
    """`python -m stancerun serve` on a free port of 127.0.0.1, healthy; SIGTERM (or a kill) after."""
    from test_distributed import free_port

    port = free_port()
    command = [sys.executable, "-m", "stancerun", "serve", str(run_dir), "--port", str(port), *SERVER_ARGS]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}")
        # from now on a thread drains what it writes: a full pipe would block the server
        threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
        yield process, port, output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("the server did not exit within 30 s of SIGTERM after the soak") from None
    assert code in (0, -signal.SIGTERM), "".join(output)[-3000:]  # uvicorn re-raises the signal once it has shut down


def test_a_minute_of_good_and_hostile_clients_at_concurrency_64(server, record_property):
    process, port, output = server
    report = asyncio.run(asyncio.wait_for(soak(f"http://127.0.0.1:{port}", port, process.pid), SOAK_SECONDS + 240))
    line = summary(report)
    print(line)
    record_property("soak", line)
    assert report["warm"]["wrong"] == [] and not [k for k, c in report["warm"]["tally"].items() if set(c) != {200}]
    for kind in GOOD:
        assert report["tally"][kind] and set(report["tally"][kind]) == {200}, (kind, report["tally"][kind],
                                                                              report["wrong"][:5])
    assert report["wrong"] == [], report["wrong"][:5]
    for kind, (_, allowed, _) in HOSTILE.items():
        assert report["tally"][kind] and set(report["tally"][kind]) <= allowed, (kind, report["tally"][kind])
    assert report["health"] == 200 and process.poll() is None, "".join(output)[-3000:]
    metrics = report["metrics"]
    assert settled(requests_counted(metrics), report["expected"]), (requests_counted(metrics), report["expected"])
    assert not [status for status in requests_counted(metrics) if status.startswith("5")]
    assert metric(metrics, "stancerun_queue_length") == 0
    # texts classified: each one the warm-up and the soak sent in a good request, and some of those whose clients left
    extra = metric(metrics, "stancerun_inputs_total") - report["alone"] - report["warm"]["texts"] - report["texts"]
    assert 0 <= extra <= report["texts_left"], extra
    assert report["rss_after"] <= report["warm"]["rss"] + RSS_GROWTH_LIMIT, line
