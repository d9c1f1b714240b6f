"""Chat streams their clients abandon, on a real ``aiforge serve`` process on loopback: every admission slot
comes back, the generation stops (an upstream sees its request closed) and the turn is logged as cancelled."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from chat_helpers import Acme, build_bundle, spec_dict, write_docs

from serve_helpers import RunningServer, metric_samples, serving

pytestmark = pytest.mark.usefixtures("chat_env")

KEY = "cancel-key-0123456789"
QUESTION = "How much storage does the free plan include?"


def abandon_stream(port: int, body: dict[str, object], *, until: bytes, key: str = KEY) -> bytes:
    """POST a streaming chat request over a raw socket, read the answer until ``until`` appears, hang up."""
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + payload)
        while until not in got:
            chunk = sock.recv(256)
            if not chunk:
                break
            got += chunk
    return got


def in_flight(http: httpx.Client, *, settle_s: float = 10.0) -> float:
    """The server's ``aiforge_chat_in_flight`` gauge, once it is 0 (or after ``settle_s``)."""
    deadline = time.monotonic() + settle_s
    while True:
        value = metric_samples(http.get("/metrics").text).get(("aiforge_chat_in_flight", ()), -1.0)
        if value == 0 or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def chat_lines(server: RunningServer) -> list[dict[str, object]]:
    text = server.log.read_text(encoding="utf-8", errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event": "chat"')]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat-cancel-keys") / "keys.txt"
    path.write_text(KEY + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(acme: Acme, keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("chat-cancel")
    with serving(acme.path, acme.home, folder / "server.log",
                 extra=["--api-key-file", str(keys), "--access-log"]) as running:
        yield running


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_abandoned_streams_give_their_slots_back(server: RunningServer, http: httpx.Client, acme: Acme) -> None:
    body = {"model": acme.name, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    n = 200  # over chat_max_in_flight (64) three times: one slot leaked per stream would lock chat out
    for _ in range(n):
        assert abandon_stream(server.port, body, until=b"data: ").startswith(b"HTTP/1.1 200")
    answer = http.post("/v1/chat/completions", json={**body, "stream": False})
    assert answer.status_code == 200, (answer.text, server.log_tail())
    assert in_flight(http) == 0
    lines = chat_lines(server)
    assert len(lines) == n + 1, "every turn is logged once, however it ended"
    statuses = [line["status"] for line in lines]
    assert statuses.count("cancelled") >= 1 and set(statuses) <= {"200", "cancelled"}, statuses


@dataclass
class SlowUpstream:
    """An OpenAI-compatible upstream that streams one token every ``interval_s``; it records how many it
    sent and when its client went away."""

    tokens: int = 400
    interval_s: float = 0.05
    sent: int = 0
    started: float | None = None
    gone: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


def slow_upstream(state: SlowUpstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            state.started = time.monotonic()
            try:
                for i in range(state.tokens):
                    chunk = {"choices": [{"index": 0, "delta": {"content": f" tok{i}"}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    state.sent += 1
                    time.sleep(state.interval_s)
                self.wfile.write(b"data: [DONE]\n\n")
            except OSError:  # BrokenPipe / ConnectionReset: aiforge closed the upstream request
                state.gone = time.monotonic()
            finally:
                state.done.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_abandoned_stream_stops_its_upstream_generation(chat_cache: Path, keys: Path, tmp_path: Path) -> None:
    state = SlowUpstream()
    upstream = slow_upstream(state)
    try:
        generation = {"backend": "openai", "base_url": f"http://127.0.0.1:{upstream.server_port}/v1",
                      "model": "slow", "timeout_s": 30}
        built = build_bundle(spec_dict(write_docs(tmp_path / "docs"), name="acme-slow", generation=generation),
                             tmp_path / "home", tmp_path / "spec")
        with serving(built.exported.path, tmp_path / "home", tmp_path / "server.log",
                     extra=["--api-key-file", str(keys), "--access-log"]) as server:
            body = {"model": "acme-slow", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
            got = abandon_stream(server.port, body, until=b"tok2")
            hung_up = time.monotonic()
            assert b"tok2" in got, got[-500:]
            assert state.done.wait(10), "the upstream was still streaming 10 s after the client hung up"
            assert state.gone is not None, "the upstream streamed to its end: nobody stopped the generation"
            assert state.gone - hung_up < 3.0
            assert state.sent < 60, f"{state.sent} of {state.tokens} tokens generated for a client that left"
            with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as http:
                assert in_flight(http) == 0
            assert [line["status"] for line in chat_lines(server)] == ["cancelled"]
    finally:
        upstream.shutdown()
