"""A closed-loop HTTP load generator for loopback servers, bounded in time and requests.

``run_load`` runs in its own process (``measure`` spawns it), so the client's CPU use is
not counted inside the server's process, and the server under test is never this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import multiprocessing as mp
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from aiforge.errors import AiforgeError

__all__ = ["LoadResult", "check_loopback", "ephemeral_range_start", "free_port", "measure", "measure_levels",
           "run_load", "running_server", "start_server"]

MAX_REQUESTS = 1_000_000


@dataclass(frozen=True)
class LoadResult:
    """Throughput and latency percentiles of one load level."""

    concurrency: int
    duration_s: float
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    status_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_loopback(url: str) -> None:
    """Refuse any target that is not on this machine's loopback.

    Raises:
        AiforgeError: the host is not 127.0.0.0/8, ::1 or localhost.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise AiforgeError(f"{url}: the load generator only targets loopback addresses (127.0.0.1, ::1, localhost).")


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def request_body(protocol: str, text: str) -> dict[str, Any]:
    """The JSON body of one single-text request for ``protocol`` (v2, v1, bentoml or plain)."""
    if protocol == "v2":
        return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    if protocol == "v1":
        return {"inputs": [text]}
    if protocol == "bentoml":
        return {"texts": [text]}
    return {"text": text}


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams.

    httpx spends more CPU per request than a small server does, and the load generator
    shares the machine with the server under test; this client costs a fraction of that.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{self.extra}\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            key = key.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif key == "connection" and "close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status


async def _load(url: str, path: str, bodies: list[bytes], concurrency: int, duration: float,
                headers: dict[str, str]) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    deadline = time.perf_counter() + duration
    counter = {"n": 0}

    async def worker(offset: int) -> None:
        conn = _Connection(host, port, headers)
        i = offset
        try:
            while time.perf_counter() < deadline and counter["n"] < MAX_REQUESTS:
                counter["n"] += 1
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    key = str(await conn.post(path, body))
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                    key = type(exc).__name__
                    await conn.close()
                if key == "200":
                    latencies.append((time.perf_counter() - t0) * 1000)
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    ok = statuses.get("200", 0)
    return LoadResult(
        concurrency=concurrency, duration_s=elapsed, requests=sum(statuses.values()),
        errors=sum(v for k, v in statuses.items() if k != "200"), throughput_rps=ok / elapsed,
        p50_ms=_percentile(latencies, 50), p95_ms=_percentile(latencies, 95), p99_ms=_percentile(latencies, 99),
        mean_ms=statistics.fmean(latencies) if latencies else float("nan"), status_counts=statuses,
    )


def run_load(url: str, path: str, texts: list[str], *, concurrency: int, duration: float,
             protocol: str = "v2", headers: dict[str, str] | None = None,
             bodies: list[bytes] | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` clients each send one text per request for ``duration`` s.

    ``bodies`` (ready JSON request bodies, sent in turn) replaces ``texts`` for routes that take
    something other than texts: chat completions, recommendations, images.
    """
    check_loopback(url)
    if bodies is None:
        bodies = [json.dumps(request_body(protocol, t)).encode() for t in texts]
    if not bodies:
        raise AiforgeError("the load generator needs at least one request body")
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(url, path, bodies, concurrency, duration, headers or {}))


def _child(queue: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        queue.put(run_load(*args, **kwargs).to_dict())
    except BaseException as exc:  # report, never hang the parent
        queue.put({"error": repr(exc)})


def measure(url: str, path: str, texts: list[str], *, concurrency: int, duration: float,
            protocol: str = "v2", headers: dict[str, str] | None = None,
            bodies: list[bytes] | None = None) -> dict[str, Any]:
    """``run_load`` in a separate process; returns its result as a dict.

    Raises:
        AiforgeError: the load process failed or did not finish in time.
    """
    check_loopback(url)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, (url, path, texts),
                                            {"concurrency": concurrency, "duration": duration,
                                             "protocol": protocol, "headers": headers, "bodies": bodies}))
    proc.start()
    try:
        result: dict[str, Any] = queue.get(timeout=duration + 120)
    except Exception as exc:
        proc.kill()
        raise AiforgeError(f"load generator did not report within {duration + 120:.0f} s") from exc
    finally:
        proc.join(timeout=10)
    if "error" in result:
        raise AiforgeError(f"load generator failed: {result['error']}")
    return result


def measure_levels(url: str, path: str, texts: list[str], *, levels: list[int], duration: float,
                   protocol: str = "v2", bodies: list[bytes] | None = None, warmup_concurrency: int = 0,
                   unit: str = "") -> list[dict[str, Any]]:
    """``measure`` at each concurrency in ``levels``, after a 2 s warm-up at ``warmup_concurrency``
    (0: none); with ``unit`` ("req/s", "img/s"…) one line per level is printed."""
    if warmup_concurrency:
        measure(url, path, texts, concurrency=warmup_concurrency, duration=2, protocol=protocol, bodies=bodies)
    rows = []
    for c in levels:
        r = measure(url, path, texts, concurrency=c, duration=duration, protocol=protocol, bodies=bodies)
        if unit:
            print(f"   c={c:3d} {r['throughput_rps']:8.1f} {unit}  p50 {r['p50_ms']:7.1f}  p99 {r['p99_ms']:7.1f} ms"
                  f"  errors {r['errors']}", flush=True)
        rows.append(r)
    return rows


def free_port() -> int:
    """A free TCP port on 127.0.0.1, below the kernel's ephemeral range when one is free there.

    A port the kernel hands out for ``bind(0)`` can be handed again to another process (a Ray
    worker, a client socket) between this check and the server's own bind, so a server started on
    it can fail with "address already in use" (seen with Ray's HAProxy on a 2-replica start).
    Ports below the ephemeral range are never handed out that way.
    """
    low = ephemeral_range_start()
    rng = random.Random()
    for _ in range(64):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_range_start() -> int:
    """The lowest port of the kernel's ephemeral range (Linux; 32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def start_server(args: list[str], *, port: int, ready_path: str = "/v2/health/ready", timeout: float = 120.0,
                 env: dict[str, str] | None = None, log: Path | None = None) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``args`` (a server listening on ``port``) and wait until ``ready_path`` answers 200.

    Returns the process and the seconds from spawn to ready.

    Raises:
        AiforgeError: the server exited or was not ready within ``timeout``.
    """
    out = log.open("wb") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}{ready_path}"
    # one client for every poll: httpx.get builds a client (and its TLS context) each time, ~20 ms of CPU
    # that a 2-core machine takes from the server it is timing
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise AiforgeError(f"server exited with {proc.returncode} before it was ready: {' '.join(args)}")
            try:
                if client.get(url).status_code == 200:
                    return proc, time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    proc.kill()
    raise AiforgeError(f"server not ready within {timeout:.0f} s: {' '.join(args)}")


@contextlib.contextmanager
def running_server(args: list[str], *, port: int, ready_path: str = "/v2/health/ready", timeout: float = 120.0,
                   env: dict[str, str] | None = None, log: Path | None = None,
                   stop_timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """:func:`start_server`, then SIGTERM on leaving (killed if it has not exited within ``stop_timeout``).

    Yields the process and the seconds from spawn to ready.
    """
    proc, ready = start_server(args, port=port, ready_path=ready_path, timeout=timeout, env=env, log=log)
    try:
        yield proc, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def aiforge_server_args(bundles: list[str], *, port: int, extra: list[str] | None = None) -> list[str]:
    """The command line of ``aiforge serve`` in this interpreter."""
    return [sys.executable, "-m", "aiforge.cli", "serve", *bundles, "--port", str(port), "--no-access-log",
            *(extra or [])]
