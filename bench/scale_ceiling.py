"""Ray Serve's own ceiling on this machine: a no-op replica (a constant answer, no model) at concurrency 64.

    python bench/scale_ceiling.py [--duration 10] [--concurrency 64]

Rows, each a fresh local Ray cluster in its own process: the default HTTP proxy (Ray's Python proxy
actor, then a call to the replica), Ray's high-throughput mode (``RAY_SERVE_ENABLE_HA_PROXY=1`` +
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: HAProxy in front, the replica's own HTTP server, no Python proxy),
and a ``DeploymentHandle`` called from a driver (no HTTP at all). HTTP rows use the same load generator
as bench/scale.py (src/aiforge/serve/loadgen.py, its own process, single-text v2 bodies). Whatever a
no-op replica cannot exceed, no model behind the same path can: this is what Ray itself costs here.
Writes bench/results/scale_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from _common import machine, shared_data, write_result
from aiforge.serve.loadgen import free_port, measure, running_server
from scale import tree_cpu_seconds

ROUTE = "/v2/models/banking77/infer"

NOOP_CHILD = r'''
import asyncio, json, signal, sys, threading, time
import ray
from ray import serve
from starlette.responses import Response
mode, port, duration, concurrency = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
BODY = b'{"model_name":"noop","outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["x"]}]}'

@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Noop:
    """A constant answer: all that is left is Ray's own path."""
    async def __call__(self, request):
        if hasattr(request, "body"):
            await request.body()
            return Response(BODY, media_type="application/json")
        return BODY

ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
serve.start(http_options={"host": "127.0.0.1", "port": port})
handle = serve.run(Noop.bind(), name="noop", route_prefix="/")
if mode == "handle":
    async def drive():
        done, lat, stop = 0, [], time.monotonic() + duration
        async def worker():
            nonlocal done
            while time.monotonic() < stop:
                t = time.perf_counter()
                await handle.remote(b"{}")
                lat.append((time.perf_counter() - t) * 1000)
                done += 1
        for _ in range(2):  # warm-up
            await handle.remote(b"{}")
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        lat.sort()
        return {"requests": done, "throughput_rps": done / (time.monotonic() - t0),
                "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)]}
    print("RESULT " + json.dumps(asyncio.run(drive())), flush=True)
else:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
serve.shutdown(); ray.shutdown()
'''

MODES = {
    "proxy": {},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}


def http_row(mode: str, *, texts: list[str], duration: float, concurrency: int, env: dict[str, str],
             logdir: Path) -> dict[str, Any]:
    """The no-op deployment behind ``mode``'s ingress, loaded by the load generator."""
    port = free_port()
    args = [sys.executable, "-c", NOOP_CHILD, mode, str(port), str(duration), str(concurrency), "--port", str(port)]
    with running_server(args, port=port, env={**env, **MODES[mode]}, timeout=300,
                        log=logdir / f"{mode}.log") as (proc, ready):
        measure(f"http://127.0.0.1:{port}", ROUTE, texts, concurrency=8, duration=2, protocol="v2")
        before = tree_cpu_seconds(proc.pid)
        row = measure(f"http://127.0.0.1:{port}", ROUTE, texts, concurrency=concurrency, duration=duration,
                      protocol="v2")
        cpu = tree_cpu_seconds(proc.pid) - before
    row.update(server_cpu_s=cpu, cpu_ms_per_request=1000 * cpu / max(1, row["requests"]),
               loadavg_1m=os.getloadavg()[0])
    print(f"== noop {mode}: {row['throughput_rps']:.1f} req/s p50 {row['p50_ms']:.1f} ms, "
          f"{row['cpu_ms_per_request']:.2f} CPU ms/req (load {row['loadavg_1m']:.1f})", flush=True)
    return {"server": f"noop_{mode}", "env": MODES[mode], "ready_seconds": ready, **row}


def handle_row(*, duration: float, concurrency: int, env: dict[str, str]) -> dict[str, Any]:
    """The no-op deployment called through a DeploymentHandle from the driver (no HTTP)."""
    done = subprocess.run([sys.executable, "-c", NOOP_CHILD, "handle", str(free_port()), str(duration),
                           str(concurrency)], env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"handle run failed: {done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    print(f"== noop handle: {row['throughput_rps']:.1f} calls/s p50 {row['p50_ms']:.1f} ms", flush=True)
    return {"server": "noop_handle", "concurrency": concurrency, "loadavg_1m": os.getloadavg()[0], **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--modes", default="proxy,haproxy,handle")
    args = parser.parse_args()
    texts = pd.read_csv(shared_data() / "banking77" / "test.csv")["text"].tolist()
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-ceiling-") as tmp:
        logdir = Path(os.environ.get("SCALE_BENCH_LOGS", tmp))
        logdir.mkdir(parents=True, exist_ok=True)
        for mode in args.modes.split(","):
            if mode == "handle":
                rows.append(handle_row(duration=args.duration, concurrency=args.concurrency, env=env))
            else:
                rows.append(http_row(mode, texts=texts, duration=args.duration, concurrency=args.concurrency,
                                     env=env, logdir=logdir))
    payload = {"benchmark": "Ray Serve no-op replica (constant answer) at one concurrency: Ray's own ceiling",
               "command": f"nice python bench/scale_ceiling.py --duration {args.duration:g} "
                          f"--concurrency {args.concurrency} --modes {args.modes}",
               "machine": {**machine(), "loadavg": os.getloadavg()}, "rows": rows}
    print(f"wrote {write_result('scale_ceiling', payload)}")


if __name__ == "__main__":
    main()
