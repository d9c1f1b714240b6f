"""Reliability: what a server and a registry do under overload, bad clients, signals, kills and tampering.

    python bench/reliability.py [--parts overload,mixed,sigterm,streams,kill,tamper] [--overload-s 5]

Loopback only, every loop bounded; stops by itself. Fits a small BANKING77 text bundle (10 texts
per intent) and indexes a small chat bundle, then:

- overload: measures capacity (closed loop), offers 4x that rate open loop, counts statuses, checks
  that every 503/429 carries Retry-After and times the recovery; once without, once with a
  per-client rate limit;
- mixed: 400 good requests shuffled with bad ones (surrogates, deep nesting, huge numbers, wrong
  types, oversized bodies) at concurrency 32: every good one must be 200, no 5xx;
- sigterm: 50 requests in flight, SIGTERM: every accepted request must be answered;
- streams: 200 chat streams cancelled after their first bytes, then the chat routes must still
  answer (a leaked admission slot turns them into 503 "chat answers in flight");
- kill: ``kill -9`` of a chat export at five points; the registry must stay consistent and the next
  write must clean the ``.staging`` folders left behind;
- tamper: edits a copy of the bundle in many ways; every copy must be refused, naming the file.

Writes bench/results/reliability.json and prints the figures table: attempts, failures, 5xx, data lost.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import machine, shared_data, write_result
from aiforge.serve.config import ServerConfig
from aiforge.serve.loadgen import aiforge_server_args, free_port, measure, start_server

PARTS = ("overload", "mixed", "sigterm", "streams", "kill", "tamper")
KILL_POINTS = (0.1, 0.3, 0.5, 0.7, 0.9)


# ----- a raw HTTP/1.1 client: one connection per request, so nothing is hidden by a client library ------

@dataclass
class Reply:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None


async def request(port: int, method: str, path: str, body: bytes | None = None, *,
                  headers: dict[str, str] | None = None, timeout: float = 60.0) -> Reply:
    """Send one ``Connection: close`` request to 127.0.0.1:``port``; read the whole answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
        head += f"{k}: {v}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(head.encode("latin-1") + b"\r\n" + (body or b""))
        raw = await asyncio.wait_for(reader.read(-1), timeout)
        writer.close()
    except (OSError, TimeoutError) as exc:
        return Reply(None, error=type(exc).__name__)
    top, _, payload = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        return Reply(None, error="no HTTP answer")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(int(lines[0].split()[1]), parsed, payload)


def v2(texts: list[str]) -> bytes:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return json.dumps({"inputs": [tensor]}).encode()


def status_counts(replies: list[Reply]) -> dict[str, int]:
    return dict(Counter(str(r.status) if r.status is not None else f"client:{r.error}" for r in replies))


def count_5xx(replies: list[Reply]) -> int:
    return sum(1 for r in replies if r.status is not None and r.status >= 500 and r.status not in (503,))


# ----- setup ------------------------------------------------------------------------------------------

def fit_text_bundle(home: Path, work: Path) -> tuple[Path, str, list[str]]:
    """A head-mode BANKING77 bundle fitted on 10 texts per intent (fast; accuracy is not measured here)."""
    import aiforge as af

    data = shared_data() / "banking77"
    with (data / "train.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    seen: Counter[str] = Counter()
    split: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for row in rows:
        seen[row["category"]] += 1
        if seen[row["category"]] <= 13:
            split["train" if seen[row["category"]] <= 10 else "test"].append(row)
    for part, chosen in split.items():
        with (work / f"{part}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "category": r["category"]} for r in chosen)
    spec = af.AppSpec.from_dict({
        "name": "rel77", "task": "text-classification",
        "data": {"train": str(work / "train.csv"), "test": str(work / "test.csv"), "text_column": "text",
                 "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head", "head": "linear"},
    }, source="bench/reliability.py")
    app = af.App(spec, home=home)
    app.fit(progress=False)
    exported = app.export()
    return Path(exported.path), "rel77", [r["text"] for r in rows[::97]][:100]


DOCS = {
    "guide.md": "# Acme Storage guide\n\n## Reset your password\nOpen Settings, then Security, then Reset password. "
                "A link arrives by e-mail within five minutes.\n\n## Storage plans\nThe Basic plan holds 100 GB; "
                "the Pro plan holds 2 TB and keeps deleted files for 90 days.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first day of each month. Refunds take five to ten working "
                  "days to reach your card. Change your card under Settings, Billing.\n",
    "shipping.md": "# Shipping\n\nDrives ship within two days. Tracking numbers are e-mailed when the parcel "
                   "leaves the warehouse. Returns are free within 30 days.\n",
}


def chat_spec(docs: Path, folder: Path) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": "relchat", "task": "chat", "knowledge": {"paths": [str(docs)], "chunk_tokens": 64,
                                                             "overlap_tokens": 16}}
    path = folder / "aiforge.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def write_docs(folder: Path, salt: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text + salt, encoding="utf-8")
    return folder


def index_chat(spec: Path, home: Path) -> Path:
    from aiforge.tasks.chat.api import index_folder

    return Path(index_folder(spec_file=spec, home=home, progress=False).exported.path)


def env_for(home: Path) -> dict[str, str]:
    return dict(os.environ, AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


class Server:
    """``aiforge serve`` on a free loopback port, SIGTERMed on leaving."""

    def __init__(self, bundle: Path, home: Path, log: Path, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.proc, self.ready_s = start_server(aiforge_server_args([str(bundle)], port=self.port, extra=extra),
                                               port=self.port, env=env_for(home), log=log, timeout=180)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----- overload ---------------------------------------------------------------------------------------

async def open_loop(port: int, path: str, bodies: list[bytes], rate: float, seconds: float) -> list[Reply]:
    """Offer ``rate`` requests/s for ``seconds`` whatever the answers (at most 2000 in flight)."""
    gate = asyncio.Semaphore(2000)
    start = time.perf_counter()

    async def one(i: int) -> Reply:
        async with gate:
            return await request(port, "POST", path, bodies[i % len(bodies)], timeout=60)

    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    return list(await asyncio.gather(*tasks))


async def recovery_seconds(port: int, path: str, body: bytes, limit: float = 30.0) -> float | None:
    """Seconds until a request is answered 200 again (None: not within ``limit``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if (await request(port, "POST", path, body, timeout=limit)).status == 200:
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    return None


def overload_part(bundle: Path, home: Path, name: str, texts: list[str], logs: Path, seconds: float) -> dict[str, Any]:
    path = f"/v2/models/{name}/infer"
    bodies = [v2([t]) for t in texts]
    out: dict[str, Any] = {}
    with Server(bundle, home, logs / "overload.log", ["--max-queue-items", "64"]) as server:
        url = f"http://127.0.0.1:{server.port}"
        closed = measure(url, path, texts, concurrency=16, duration=3)
        capacity = closed["throughput_rps"]
        replies = asyncio.run(open_loop(server.port, path, bodies, 4 * capacity, seconds))
        recovered = asyncio.run(recovery_seconds(server.port, path, bodies[0]))
        out["capacity_rps"] = round(capacity, 1)
        runs_out = {"queue_limit": summarize_overload(replies, recovered, 4 * capacity, seconds)}
    limit = max(1.0, capacity / 2)
    with Server(bundle, home, logs / "overload-rate.log",
                ["--max-queue-items", "64", "--rate-limit", f"{limit:.1f}", "--rate-burst", "8"]) as server:
        replies = asyncio.run(open_loop(server.port, path, bodies, 4 * capacity, seconds))
        time.sleep(1.0)  # let the bucket refill before probing
        recovered = asyncio.run(recovery_seconds(server.port, path, bodies[0]))
        runs_out[f"rate_limit_{limit:.0f}_rps"] = summarize_overload(replies, recovered, 4 * capacity, seconds)
    out["runs"] = runs_out
    return out


def summarize_overload(replies: list[Reply], recovered: float | None, rate: float, seconds: float) -> dict[str, Any]:
    refused = [r for r in replies if r.status in (503, 429)]
    return {"offered_rps": round(rate, 1), "seconds": seconds, "attempts": len(replies),
            "statuses": status_counts(replies), "refused": len(refused),
            "refused_without_retry_after": sum(1 for r in refused if "retry-after" not in r.headers),
            "server_errors_5xx_other_than_503": count_5xx(replies),
            "recovery_s": None if recovered is None else round(recovered, 3)}


# ----- good requests mixed with bad ones --------------------------------------------------------------

def bad_requests(name: str) -> list[tuple[str, str, bytes]]:
    """(kind, path, body) of requests a client gets wrong or sends to harm the server."""
    v2p, v1p = f"/v2/models/{name}/infer", f"/v1/models/{name}/predict"
    deep = b"[" * 10_000 + b"]" * 10_000
    cases = [
        ("surrogate_v2", v2p, b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["\\ud800"]}]}'),
        ("surrogate_v1", v1p, b'{"inputs":["ok \\udfff"]}'),
        ("not_json", v1p, b'{"inputs": ["unfinished'),
        ("deep_nesting_v1", v1p, b'{"inputs": ' + deep + b"}"),
        ("deep_nesting_v2_data", v2p, b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":'
                                      + deep + b"}]}"),
        ("huge_integer", v1p, b'{"inputs": ["hi"], "top_k": ' + b"9" * 5000 + b"}"),
        ("null_item", v1p, b'{"inputs": [null]}'),
        ("number_item", v1p, b'{"inputs": [5]}'),
        ("string_top_k", v1p, b'{"inputs": ["hi"], "top_k": "5"}'),
        ("wrong_datatype", v2p, b'{"inputs":[{"name":"text","shape":[1],"datatype":"FP32","data":[1.0]}]}'),
        ("shape_mismatch", v2p, b'{"inputs":[{"name":"text","shape":[3],"datatype":"BYTES","data":["a"]}]}'),
        ("unknown_model", "/v2/models/no-such-model/infer", v2(["hi"])),
        ("too_many_inputs", v1p, json.dumps({"inputs": ["x"] * 300}).encode()),
        ("text_too_long", v1p, json.dumps({"inputs": ["x" * 20_000]}).encode()),
        ("body_over_limit", v1p, b'{"inputs": ["' + b"x" * (2 << 20) + b'"]}'),
        ("empty_inputs", v1p, b'{"inputs": []}'),
    ]
    return cases


def mixed_part(bundle: Path, home: Path, name: str, texts: list[str], logs: Path) -> dict[str, Any]:
    good = [("good_v2", f"/v2/models/{name}/infer", v2([t])) for t in texts[:50]] * 4
    good += [("good_v1", f"/v1/models/{name}/predict", json.dumps({"inputs": [t]}).encode()) for t in texts[:50]] * 4
    bad = bad_requests(name) * 13
    calls = good + bad
    random.Random(0).shuffle(calls)
    with Server(bundle, home, logs / "mixed.log") as server:
        async def run() -> list[Reply]:
            gate = asyncio.Semaphore(32)

            async def one(path: str, body: bytes) -> Reply:
                async with gate:
                    return await request(server.port, "POST", path, body)

            return list(await asyncio.gather(*(one(p, b) for _, p, b in calls)))

        replies = run_async(run)
    by_kind: dict[str, Counter[str]] = {}
    for (kind, _, _), reply in zip(calls, replies, strict=True):
        by_kind.setdefault(kind, Counter())[str(reply.status) if reply.status else f"client:{reply.error}"] += 1
    good_replies = [r for (k, _, _), r in zip(calls, replies, strict=True) if k.startswith("good")]
    return {"good": len(good_replies), "good_not_200": sum(1 for r in good_replies if r.status != 200),
            "bad": len(bad), "server_errors_5xx": sum(1 for r in replies if (r.status or 0) >= 500),
            "statuses_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}}


def run_async(make: Callable[[], Any]) -> Any:
    return asyncio.run(make())


# ----- SIGTERM under load -----------------------------------------------------------------------------

def sigterm_part(bundle: Path, home: Path, name: str, texts: list[str], logs: Path) -> dict[str, Any]:
    server = Server(bundle, home, logs / "sigterm.log")
    n = 50
    body = v2([" ".join(texts[i:i + 6]) for i in range(0, 24, 6)])

    async def run() -> tuple[list[Reply], float]:
        tasks = [asyncio.create_task(request(server.port, "POST", f"/v2/models/{name}/infer", body, timeout=60))
                 for _ in range(n)]
        await asyncio.sleep(0.3)  # every request is sent and read by the server
        sent_at = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        replies = list(await asyncio.gather(*tasks))
        return replies, sent_at

    try:
        replies, _ = run_async(run)
        code = server.proc.wait(timeout=40)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    return {"in_flight": n, "answered_200": sum(1 for r in replies if r.status == 200),
            "lost": sum(1 for r in replies if r.status != 200), "statuses": status_counts(replies), "exit_code": code}


# ----- cancelled chat streams -------------------------------------------------------------------------

async def cancelled_stream(port: int, model: str) -> bool:
    """Open a chat stream, read its first bytes, close the socket; True when bytes came."""
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "How do I reset my password?"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        first = await asyncio.wait_for(reader.read(64), 30)
        writer.transport.abort()  # gone, as a closed browser tab is
        return bool(first)
    except (OSError, TimeoutError):
        return False


def streams_part(chat_bundle: Path, home: Path, logs: Path) -> dict[str, Any]:
    model = "relchat"
    with Server(chat_bundle, home, logs / "streams.log") as server:
        async def run() -> dict[str, Any]:
            opened = 0
            for _ in range(4):  # 4 waves of 50 at once
                opened += sum(await asyncio.gather(*(cancelled_stream(server.port, model) for _ in range(50))))
            await asyncio.sleep(1.0)
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "How long do refunds take?"}]})
            # as many follow-ups at once as the server admits: a slot leaked by a cancelled stream shows as a 503
            # (before: 70 follow-ups, over the 64-slot limit, so 6 were refused by design, leak or not)
            limit = ServerConfig().chat_max_in_flight
            follow = await asyncio.gather(*(request(server.port, "POST", "/v1/chat/completions", body.encode())
                                            for _ in range(limit)))
            metrics = await request(server.port, "GET", "/metrics")
            gauges = {line.split()[0]: line.split()[-1] for line in metrics.body.decode(errors="replace").splitlines()
                      if line and not line.startswith("#") and "flight" in line}
            return {"cancelled": 200, "opened": opened, "follow_ups": limit,
                    "follow_up_statuses": status_counts(list(follow)),
                    "follow_up_not_200": sum(1 for r in follow if r.status != 200),
                    "follow_up_503_in_flight": sum(1 for r in follow if r.status == 503),
                    "chat_still_answers": any(r.status == 200 for r in follow), "in_flight_gauges": gauges}

        return dict(run_async(run))


# ----- kill -9 during export ---------------------------------------------------------------------------

_EXPORT_CHILD = """
import sys
from aiforge.tasks.chat.api import index_folder
index_folder(spec_file=sys.argv[1], home=sys.argv[2], progress=False)
"""


def registry_state(home: Path) -> dict[str, Any]:
    """Whether every registered version loads and verifies, and what ``.staging`` holds."""
    from aiforge.bundle.format import read_manifest
    from aiforge.bundle.registry import Registry

    problems = []
    try:
        records = Registry(home).records()
        for record in records:
            try:
                read_manifest(Registry(home).resolve(f"{record.name}:{record.version}"))
            except Exception as exc:  # any failure to verify is the finding
                problems.append(f"{record.name}:{record.version}: {exc}")
    except Exception as exc:
        records, problems = [], [f"registry unreadable: {exc}"]
    staging = home / ".staging"
    leftovers = [p for p in staging.iterdir()] if staging.is_dir() else []
    size = sum(f.stat().st_size for p in leftovers for f in p.rglob("*") if f.is_file())
    return {"versions": len(records), "problems": problems, "staging_folders": len(leftovers), "staging_bytes": size}


@dataclass(frozen=True)
class StagingWindow:
    opened_s: float  # from the export's start until a .staging folder appeared
    closed_s: float  # ... until it was gone (renamed into the registry)
    total_s: float


def _staging_busy(home: Path) -> bool:
    staging = home / ".staging"
    return staging.is_dir() and any(staging.iterdir())


def staging_window(spec: Path, home: Path) -> StagingWindow:
    """Run one export to the end, watching ``home/.staging`` every 10 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _EXPORT_CHILD, str(spec), str(home)], env=env_for(home))
    opened = closed = None
    while proc.poll() is None and time.perf_counter() - start < 600:
        busy = _staging_busy(home)
        now = time.perf_counter() - start
        if busy and opened is None:
            opened = now
        if not busy and opened is not None and closed is None:
            closed = now
        time.sleep(0.01)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the reference export failed with exit code {proc.returncode}")
    opened = total * 0.5 if opened is None else opened  # never seen: too fast to watch; aim at the end
    return StagingWindow(opened, closed if closed is not None else total, total)


def kill_part(work: Path) -> dict[str, Any]:
    base_home = work / "kill-base"
    docs = write_docs(work / "kill-docs")
    spec = chat_spec(docs, work / "kill-spec")
    index_chat(spec, base_home)  # version 1, which every kill must leave intact
    write_docs(docs, salt="\nUpdated.\n")
    trial = work / "kill-trial"
    shutil.copytree(base_home, trial)
    window = staging_window(spec, trial)
    points = []
    for fraction in KILL_POINTS:
        home = work / f"kill-{fraction}"
        shutil.copytree(base_home, home)
        proc = subprocess.Popen([sys.executable, "-c", _EXPORT_CHILD, str(spec), str(home)], env=env_for(home))
        # the kill lands at this fraction of the reference export's staging window, counted from the
        # moment this export's own staging folder appears (start-up time varies with the machine's load)
        deadline = time.perf_counter() + 600
        while proc.poll() is None and not _staging_busy(home) and time.perf_counter() < deadline:
            time.sleep(0.005)
        time.sleep(fraction * (window.closed_s - window.opened_s))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        after_kill = registry_state(home)
        write_docs(docs, salt=f"\nUpdated {fraction}.\n")
        index_chat(spec, home)  # the next write
        after_next = registry_state(home)
        write_docs(docs, salt="\nUpdated.\n")
        points.append({"after_staging_opened_s": round(fraction * (window.closed_s - window.opened_s), 3),
                       "finished_before_kill": finished, "after_kill": after_kill, "after_next_write": after_next})
    return {"export_s": round(window.total_s, 2), "staging_window_s": [round(window.opened_s, 2),
                                                                        round(window.closed_s, 2)], "points": points,
            "inconsistent": sum(1 for p in points if p["after_kill"]["problems"] or p["after_next_write"]["problems"]),
            "staging_left_after_next_write": sum(p["after_next_write"]["staging_folders"] for p in points)}


# ----- tampering ----------------------------------------------------------------------------------------

def _manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "manifest.json").read_text(encoding="utf-8")))


def _write_manifest(folder: Path, raw: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_cases(bundle: Path) -> list[tuple[str, str, Callable[[Path], None]]]:
    """(case, the file its error must name, the edit) for a copy of ``bundle``."""
    files = _manifest(bundle)["files"]
    weights = max(files, key=lambda f: files[f]["size"])
    other = next(f for f in sorted(files) if f not in (weights, "pipeline.json", "card.md"))
    graph = weights

    def drop_entry_and_corrupt(folder: Path) -> None:
        raw = _manifest(folder)
        del raw["files"][other]
        _write_manifest(folder, raw)
        _flip(folder / other)

    def empty_files_corrupt_pipeline(folder: Path) -> None:
        raw = _manifest(folder)
        raw["files"] = {}
        _write_manifest(folder, raw)
        (folder / "pipeline.json").write_text('{"graphs": {}}', encoding="utf-8")

    def outside_graph(folder: Path) -> None:
        from aiforge.bundle.format import sha256_file

        pipeline = json.loads((folder / "pipeline.json").read_text(encoding="utf-8"))
        shutil.copy(folder / graph, folder.parent / "outside.onnx")
        text = json.dumps(pipeline).replace(json.dumps(graph), json.dumps("../outside.onnx"))
        (folder / "pipeline.json").write_text(text, encoding="utf-8")
        raw = _manifest(folder)
        raw["files"]["pipeline.json"] = {"sha256": sha256_file(folder / "pipeline.json"),
                                         "size": (folder / "pipeline.json").stat().st_size}
        _write_manifest(folder, raw)

    def edit(key: str, value: Any) -> Callable[[Path], None]:
        def apply(folder: Path) -> None:
            raw = _manifest(folder)
            target = raw
            *parents, last = key.split(".")
            for p in parents:
                target = target.setdefault(p, {})
            target[last] = value
            _write_manifest(folder, raw)
        return apply

    def sha(name: str) -> Callable[[Path], None]:
        def apply(folder: Path) -> None:
            raw = _manifest(folder)
            raw["files"][name]["sha256"] = "0" * 64
            _write_manifest(folder, raw)
        return apply

    def rehash(name: str, change: Callable[[Path], None]) -> Callable[[Path], None]:
        """Change a file and update its manifest entry: only the manifest's own digest can tell."""
        def apply(folder: Path) -> None:
            from aiforge.bundle.format import sha256_file

            change(folder / name)
            raw = _manifest(folder)
            raw["files"][name] = {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
            _write_manifest(folder, raw)
        return apply

    def symlink_out(folder: Path) -> None:
        target = folder.parent / "elsewhere.bin"
        shutil.copy(folder / other, target)
        (folder / other).unlink()
        (folder / other).symlink_to(target)

    return [
        ("flip_byte_weights", weights, lambda f: _flip(f / weights)),
        ("flip_byte_pipeline", "pipeline.json", lambda f: _flip(f / "pipeline.json")),
        ("flip_byte_card", "card.md", lambda f: _flip(f / "card.md")),
        ("flip_byte_other_file", other, lambda f: _flip(f / other)),
        ("truncate_weights", weights, lambda f: (f / weights).write_bytes((f / weights).read_bytes()[:100])),
        ("delete_listed_file", other, lambda f: (f / other).unlink()),
        ("add_unlisted_file", "extra.onnx", lambda f: (f / "extra.onnx").write_bytes(b"\x08\x07unlisted")),
        ("add_unlisted_hidden_file", ".hidden", lambda f: (f / ".hidden").write_text("x", encoding="utf-8")),
        # These five edit manifest.json without re-digesting it: the refusal names the manifest, the
        # file that was changed (before the digest, a changed sha256 was blamed on the data file).
        ("drop_entry_then_corrupt_file", "manifest.json", drop_entry_and_corrupt),
        ("files_empty_pipeline_corrupt", "manifest.json", empty_files_corrupt_pipeline),
        ("pipeline_points_outside", "manifest.json", outside_graph),
        ("changed_sha_for_card", "manifest.json", sha("card.md")),
        ("changed_sha_for_weights", "manifest.json", sha(weights)),
        ("edited_metrics", "manifest.json", edit("metrics.accuracy", 0.999)),
        ("edited_serve_host", "manifest.json", edit("spec.serve.host", "0.0.0.0")),
        ("edited_name", "manifest.json", edit("name", "someone-else")),
        ("edited_task", "manifest.json", edit("task", "tabular-classification")),
        ("rehashed_card_edit", "manifest.json",
         rehash("card.md", lambda p: p.write_text(p.read_text(encoding="utf-8") + "\nEdited.\n", encoding="utf-8"))),
        ("rehashed_other_edit", "manifest.json", rehash(other, _flip)),
        ("manifest_not_json", "manifest.json", lambda f: (f / "manifest.json").write_text("{", encoding="utf-8")),
        ("manifest_deleted", "manifest.json", lambda f: (f / "manifest.json").unlink()),
        ("symlink_to_outside", other, symlink_out),
    ]


def tamper_part(bundle: Path, work: Path) -> dict[str, Any]:
    from aiforge.bundle.runtime import Runtime

    results = []
    for case, names, edit in tamper_cases(bundle):
        folder = work / "tamper" / case / "bundle"
        shutil.copytree(bundle, folder, symlinks=True)
        edit(folder)
        try:
            Runtime.load(folder, home=work / "tamper-home")
            refused, message = False, ""
        except Exception as exc:  # any refusal counts; its message is checked below
            refused, message = True, f"{type(exc).__name__}: {exc}"
        results.append({"case": case, "refused": refused, "names_the_file": refused and names in message,
                        "expected_name": names, "message": message[:300]})
    return {"cases": len(results), "refused": sum(r["refused"] for r in results),
            "named_the_file": sum(r["names_the_file"] for r in results), "results": results}


# ----- main ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--overload-s", type=float, default=5.0)
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        sys.exit(f"unknown part(s) {unknown}; parts are {list(PARTS)}")
    result: dict[str, Any] = {"machine": machine(), "parts": {}}
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-reliability-") as tmp:
        work = Path(tmp)
        home, logs = work / "home", work / "logs"
        logs.mkdir()
        os.environ["AIFORGE_HOME"] = str(home)
        bundle = name = texts = None
        if {"overload", "mixed", "sigterm", "tamper"} & set(parts):
            t0 = time.perf_counter()
            bundle, name, texts = fit_text_bundle(home, work)
            print(f"text bundle fitted in {time.perf_counter() - t0:.0f} s", flush=True)
        chat_bundle = None
        if "streams" in parts:
            chat_bundle = index_chat(chat_spec(write_docs(work / "docs"), work / "chat-spec"), home)
        for part in parts:
            t0 = time.perf_counter()
            try:
                if part == "overload":
                    out = overload_part(bundle, home, name, texts, logs, args.overload_s)
                elif part == "mixed":
                    out = mixed_part(bundle, home, name, texts, logs)
                elif part == "sigterm":
                    out = sigterm_part(bundle, home, name, texts, logs)
                elif part == "streams":
                    out = streams_part(chat_bundle, home, logs)
                elif part == "kill":
                    out = kill_part(work)
                else:
                    out = tamper_part(bundle, work)
            except Exception as exc:  # report the part as failed, run the others
                out = {"error": f"{type(exc).__name__}: {exc}"}
            out["seconds"] = round(time.perf_counter() - t0, 1)
            result["parts"][part] = out
            print(f"== {part}: {json.dumps({k: v for k, v in out.items() if k not in ('results', 'points')})}",
                  flush=True)
    result["figures"] = figures(result["parts"])
    for row in result["figures"]:
        print(f"{row['check']:<24} attempts {row['attempts']:>5}  failures {row['failures']:>4}  "
              f"5xx {row['5xx']:>4}  data lost {row['data_lost']:>4}", flush=True)
    print(f"wrote {write_result('reliability', result)}")


def figures(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """The closing note's table: attempts, failures, 5xx, data lost per check that ran."""
    rows = []
    if "runs" in parts.get("overload", {}):
        for run, r in parts["overload"]["runs"].items():
            rows.append({"check": f"overload {run}", "attempts": r["attempts"],
                         "failures": r["refused_without_retry_after"] + (r["recovery_s"] is None),
                         "5xx": r["server_errors_5xx_other_than_503"], "data_lost": 0})
    if "good" in parts.get("mixed", {}):
        m = parts["mixed"]
        rows.append({"check": "mixed", "attempts": m["good"] + m["bad"], "failures": m["good_not_200"],
                     "5xx": m["server_errors_5xx"], "data_lost": m["good_not_200"]})
    if "lost" in parts.get("sigterm", {}):
        s = parts["sigterm"]
        rows.append({"check": "sigterm", "attempts": s["in_flight"], "failures": s["lost"], "5xx": 0,
                     "data_lost": s["lost"]})
    if "opened" in parts.get("streams", {}):
        s = parts["streams"]
        leaked = float(s["in_flight_gauges"].get("aiforge_chat_in_flight", "nan")) != 0.0
        rows.append({"check": "streams", "attempts": s["cancelled"], "failures": s["follow_up_not_200"] + leaked,
                     "5xx": sum(v for k, v in s["follow_up_statuses"].items() if k.startswith("5") and k != "503"),
                     "data_lost": 0})
    if "points" in parts.get("kill", {}):
        k = parts["kill"]
        rows.append({"check": "kill -9", "attempts": len(k["points"]),
                     "failures": k["inconsistent"] + k["staging_left_after_next_write"], "5xx": 0,
                     "data_lost": k["inconsistent"]})
    if "cases" in parts.get("tamper", {}):
        t = parts["tamper"]
        rows.append({"check": "tamper", "attempts": t["cases"], "failures": t["cases"] - t["named_the_file"],
                     "5xx": 0, "data_lost": t["cases"] - t["refused"]})
    return rows


if __name__ == "__main__":
    main()
