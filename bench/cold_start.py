"""Cold start: ``aiforge serve BUNDLE`` spawn to ``/v2/health/ready``, this tree against another.

    python bench/cold_start.py [--bundle PATH] [--baseline-src ../main/src] [--runs 7]

Without ``--bundle`` it serves ``banking77`` from the registry (``--home``, default ``$AIFORGE_HOME``),
fitting and exporting the head-mode BANKING77 bundle there first when it is not registered (minutes).

Starts the server ``--runs`` times for each source tree (alternating, same bundle, same run) and
reports best and median seconds from spawn to ready (the model loaded, verified and warmed up), the
CPU seconds the server process had used by then (user + system, all threads: less sensitive than
wall time to a busy machine), split into the main thread's (the imports, which hold the GIL) and the
other threads' (the preload: hashing, the onnxruntime session, the warm-up), its peak resident memory
(``VmHWM``) at ready and after the first requests, and the latency of the first predict request after
ready against the next ten (readiness must mean the first request is served at normal speed). Also
what the start-up imports cost (``python -X importtime`` of the modules ``aiforge serve`` imports,
cumulative milliseconds of the top-level modules, best of three), and the cost of each start-up step
run one after another in a fresh interpreter (``steps_ms`` wall and ``steps_cpu_ms``, best of three:
importing the entry point, the server settings, onnxruntime, loading the runtime (every file hashed,
the tokenizer and the graph), the warm-up, importing FastAPI and the app, uvicorn, building the app;
``parts_ms``: hashing every file and building the session alone, and the CPU milliseconds of a
session at each graph optimization level). ``gil_overlap``: the CPU a spinning Python thread gets
while each loading step runs in another thread (``python_share`` near 1 or above: the step releases
the GIL and overlaps the imports; near 0: it holds the GIL); ``overlap_ms``: loading the bundle in a
thread while the main thread imports FastAPI, the app and uvicorn, against each alone (wall ms, best
of three). Every child process runs with its tree's bytecode compiled (each tree into its own
``PYTHONPYCACHEPREFIX``, written by one unmeasured start), as an installed package has it; readiness
is polled every 10 ms through one HTTP client (``aiforge.serve.loadgen.start_server``); ``poller``: the
baseline tree (else this one) polled the way ``start_server`` polled before (a new client every 20 ms)
against now, ``--poller-runs`` starts each. Writes bench/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from _common import ROOT, machine, write_result
from aiforge.serve.loadgen import aiforge_server_args, free_port, running_server

IMPORTS = ("import aiforge.cli; from aiforge.serve.app import create_app; import uvicorn; "
           "from aiforge.bundle.runtime import Runtime")
PYCACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "aiforge-cold-start-pycache"


def tree_env(src: Path, home: Path | None = None) -> dict[str, str]:
    """The environment of a child process running ``src``: its bytecode compiled once into a cache of its own.

    An installed package has its ``.pyc`` files; a checkout under ``PYTHONDONTWRITEBYTECODE=1`` would compile
    every aiforge module at each start (about 70 ms of CPU here), and only the tree without a ``__pycache__``.
    """
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1",
               PYTHONPYCACHEPREFIX=str(PYCACHE / str(src).strip("/").replace("/", "_")))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if home is not None:
        env["AIFORGE_HOME"] = str(home)
    return env


# Each start-up step of ``aiforge serve BUNDLE``, one after another (no overlap): wall and CPU milliseconds.
STEPS = """
import hashlib, json, sys, time
t, c = time.perf_counter(), time.process_time(); out = {}; cpu = {}
def done(step):
    global t, c
    now, used = time.perf_counter(), time.process_time()
    out[step] = round((now - t) * 1000, 1); cpu[step] = round((used - c) * 1000, 1); t, c = now, used
import aiforge.cli; done("import aiforge.cli (the entry point)")
from aiforge.serve.config import server_config
config = server_config([sys.argv[1]]); done("server_config (pydantic)")
import onnxruntime, tokenizers; done("import onnxruntime, tokenizers")
from aiforge.bundle.runtime import Runtime, available_cpus
rt = Runtime.load(sys.argv[1], precision=config.precision, threads=config.threads or available_cpus())
done("Runtime.load (every file hashed, tokenizer, onnxruntime session)")
rt.warmup(); done("warm-up")
from aiforge.serve.app import create_app; done("import aiforge.serve.app (fastapi, routes)")
import uvicorn; done("import uvicorn")
app = create_app([sys.argv[1]], config=config); done("create_app")
from aiforge.serve.connections import uvicorn_settings
uvicorn.Config(app, **uvicorn_settings(config)).load(); done("uvicorn.Config.load (its protocol imports)")
parts = {}
from pathlib import Path
import onnxruntime as ort
folder = Path(rt.path)
t0 = time.perf_counter()
for f in sorted(folder.iterdir()):
    hashlib.sha256(f.read_bytes()).hexdigest()
parts["sha256 of every file"] = round((time.perf_counter() - t0) * 1000, 1)
graph = folder / rt.pipeline["graphs"][rt.precision]
levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
for _ in range(3):
    for name, level in levels.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = config.threads or available_cpus(), 1
        options.graph_optimization_level = level
        c0 = time.process_time(); ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        key = f"CPU: onnxruntime session, level {name}"
        parts[key] = min(parts.get(key, 1e9), round((time.process_time() - c0) * 1000, 1))
print(json.dumps({"steps_ms": out, "steps_cpu_ms": cpu, "parts_ms": parts}))
"""


def step_costs(src: Path, bundle: Path, home: Path, *, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Milliseconds of each start-up step, run one after another in a fresh interpreter (best of ``repeats``
    for each step), and of the loading parts alone."""
    env = tree_env(src, home)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", STEPS, str(bundle)], capture_output=True, text=True, env=env,
                              timeout=300, check=True)
        for group, costs in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            mine = best.setdefault(group, {})
            for step, ms in costs.items():
                mine[step] = min(mine.get(step, ms), ms)
    return best


def graph_mb(bundle: Path) -> float:
    """Megabytes of the bundle's int8 graph."""
    graphs = json.loads((bundle / "pipeline.json").read_text(encoding="utf-8"))["graphs"]
    return round((bundle / graphs["int8"]).stat().st_size / 1e6, 1)


def _gil_share(work: Any) -> dict[str, float]:
    """Run ``work`` in a thread while this thread spins in Python: each thread's CPU milliseconds meanwhile.

    Work that releases the GIL leaves the spinning thread about as much CPU as it uses itself (given a free
    core); work that holds it leaves the spinning thread almost none.
    """
    import threading

    done = threading.Event()
    used: dict[str, float] = {}

    def run() -> None:
        start = time.thread_time()
        work()
        used["work_cpu_ms"] = round((time.thread_time() - start) * 1000, 1)
        done.set()

    start = time.thread_time()
    thread = threading.Thread(target=run)
    thread.start()
    while not done.is_set():
        sum(range(200))  # Python bytecode: needs the GIL
    thread.join()
    used["python_thread_cpu_ms"] = round((time.thread_time() - start) * 1000, 1)
    used["python_share"] = round(used["python_thread_cpu_ms"] / max(used["work_cpu_ms"], 1e-3), 2)
    return used


def gil_overlap(bundle: Path) -> dict[str, dict[str, float]]:
    """How much a Python thread (the imports) runs beside each loading step: whether the step holds the GIL."""

    from tokenizers import Tokenizer

    from aiforge.bundle.format import sha256_file
    from aiforge.bundle.runtime import available_cpus, onnx_session

    pipeline = json.loads((bundle / "pipeline.json").read_text(encoding="utf-8"))
    graph = bundle / pipeline["graphs"]["int8"]
    tokenizer = bundle / pipeline.get("tokenizer", "tokenizer.json")
    steps = {
        "sha256_file of every file (8 MiB pieces)": lambda: [sha256_file(f) for f in bundle.iterdir() if f.is_file()],
        "onnxruntime session from the int8 graph's path": lambda: onnx_session(graph, threads=available_cpus()),
        "Tokenizer.from_file": lambda: Tokenizer.from_file(str(tokenizer)),
    }
    return {name: _gil_share(work) for name, work in steps.items()}


# The loading (a thread) beside the imports that follow it in ``aiforge serve`` (the main thread), and each alone.
OVERLAP = """
import json, sys, threading, time
mode, bundle = sys.argv[1], sys.argv[2]
from aiforge.bundle.runtime import Runtime
def load():
    Runtime.load(bundle).warmup()
def imports():
    from aiforge.serve.app import create_app
    import uvicorn
start = time.perf_counter()
if mode == "both":
    thread = threading.Thread(target=load); thread.start(); imports(); thread.join()
else:
    load() if mode == "load" else imports()
print(json.dumps(round((time.perf_counter() - start) * 1000, 1)))
"""


def overlap(src: Path, bundle: Path, home: Path, *, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of loading the bundle alone, of importing FastAPI, the app and uvicorn alone, and of
    both at once (loading in a thread), each the best of ``repeats`` in fresh interpreters: ``both`` near
    the larger of the two means the loading runs beside the imports, near their sum that it does not."""
    env = tree_env(src, home)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for mode in ("load", "imports", "both"):
            proc = subprocess.run([sys.executable, "-c", OVERLAP, mode, str(bundle)], capture_output=True, text=True,
                                  env=env, timeout=300, check=True)
            best[mode] = min(best.get(mode, 1e9), json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"load_ms": best["load"], "imports_ms": best["imports"], "both_ms": best["both"],
            "sum_ms": round(best["load"] + best["imports"], 1)}


def registered_or_fitted(home: Path) -> Path:
    """The folder of ``banking77`` in ``home``'s registry, fitted and exported there first if absent."""
    from aiforge.bundle.registry import Registry
    from aiforge.errors import RegistryError
    from optimize import fit_bundle

    try:
        return Registry(home).resolve("banking77")
    except RegistryError:
        return fit_bundle(home)


def _cpu(stat_file: Path) -> float:
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of process ``pid`` so far: all its threads, and its main thread alone."""
    return _cpu(Path(f"/proc/{pid}/stat")), _cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


TEXTS = ["where is my card?", "I want to top up with Apple Pay", "my transfer has not arrived yet",
         "how do I change my PIN?", "the exchange rate on my payment was wrong"]


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` so far (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ready_seconds(src: Path, bundle: Path, home: Path) -> dict[str, float]:
    """Seconds from spawn to ready, the server's CPU seconds by then (all threads, the main thread), its
    peak RSS then and after the requests, and the milliseconds of the first predict request after ready
    and the median of the next ten."""
    port = free_port()
    env = tree_env(src, home)
    name = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["name"]
    with running_server(aiforge_server_args([str(bundle)], port=port), port=port, env=env, timeout=300) as (p, t):
        used, main_thread = cpu_seconds(p.pid)
        rss_ready = peak_rss_mb(p.pid)
        url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
        latencies = []
        with httpx.Client(timeout=30) as client:
            client.get(f"http://127.0.0.1:{port}/v2/health/live")  # the connection is open before the first predict
            for i in range(11):
                start = time.perf_counter()
                client.post(url, json={"inputs": [TEXTS[i % len(TEXTS)]]}).raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)
        return {"ready_s": t, "cpu_s": used, "main_thread_cpu_s": main_thread, "peak_rss_mb_at_ready": rss_ready,
                "peak_rss_mb_after_requests": peak_rss_mb(p.pid),
                "first_request_ms": latencies[0], "next_ten_median_ms": statistics.median(latencies[1:])}


def poller_effect(src: Path, bundle: Path, home: Path, *, runs: int) -> dict[str, Any]:
    """Spawn to ready of ``src``, polled as ``start_server`` polled before (``httpx.get`` per poll: a new client
    and TLS context each time, every 20 ms) against now (one client, every 10 ms), alternating: how much of
    an earlier figure was the poller taking CPU from the server."""
    def once(old: bool) -> float:
        port = free_port()
        start = time.perf_counter()
        proc = subprocess.Popen(aiforge_server_args([str(bundle)], port=port), env=tree_env(src, home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        try:
            with httpx.Client(timeout=1.0, trust_env=False) as client:
                while time.perf_counter() - start < 300:
                    try:
                        if (httpx.get(url, timeout=1.0) if old else client.get(url)).status_code == 200:
                            return time.perf_counter() - start
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02 if old else 0.01)
            raise RuntimeError(f"{src}: not ready within 300 s")
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(runs):
        for old in (True, False):
            times[old].append(once(old))
    return {"src": str(src), "old_poller_ready_s_median": round(statistics.median(times[True]), 4),
            "new_poller_ready_s_median": round(statistics.median(times[False]), 4),
            "old_poller_runs": times[True], "new_poller_runs": times[False]}


def import_profile(src: Path, *, repeats: int = 3) -> dict[str, Any]:
    """``python -X importtime`` of what ``aiforge serve`` imports: the total and the heaviest top-level modules
    and their direct children (cumulative ms), each the best of ``repeats``, and how many modules load."""
    env = tree_env(src)
    top: dict[str, int] = {}
    totals, counts = [], []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], capture_output=True, text=True,
                              env=env, timeout=300)
        mine: dict[str, int] = {}
        total = count = 0
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
            if m:
                count += 1
            if m and len(m.group(2)) <= 2:  # top-level imports and their direct children
                mine[m.group(3)] = max(mine.get(m.group(3), 0), int(m.group(1)))
            if m and not m.group(2):
                total += int(m.group(1))
        for k, v in mine.items():
            top[k] = min(top.get(k, v), v)
        totals.append(total)
        counts.append(count)
    heavy = sorted(top.items(), key=lambda kv: -kv[1])[:15]
    return {"total_ms": min(totals) / 1000, "modules": min(counts), "top_ms": {k: v / 1000 for k, v in heavy}}


def summary(runs: list[dict[str, float]], src: Path | None = None) -> dict[str, Any]:
    """Best and median ready time and the medians of the rest, over ``runs``."""
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 4)

    return {**({"src": str(src)} if src else {}), "ready_s_best": min(r["ready_s"] for r in runs),
            "ready_s_median": median("ready_s"), "runs": [r["ready_s"] for r in runs],
            "cpu_s_to_ready_median": median("cpu_s"), "cpu_s_runs": [r["cpu_s"] for r in runs],
            "main_thread_cpu_s_median": median("main_thread_cpu_s"),
            "other_threads_cpu_s_median": round(statistics.median(r["cpu_s"] - r["main_thread_cpu_s"]
                                                                  for r in runs), 4),
            "peak_rss_mb_at_ready_median": median("peak_rss_mb_at_ready"),
            "peak_rss_mb_after_requests_median": median("peak_rss_mb_after_requests"),
            "first_request_ms_median": median("first_request_ms"),
            "next_ten_request_ms_median": median("next_ten_median_ms")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="a MiniLM BANKING77 bundle folder "
                                                                 "[default: banking77 in --home, fitted if absent]")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another checkout's src/ to compare")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--poller-runs", type=int, default=3, help="starts of the baseline (else this) tree per "
                        "poller, old and new (0: skip)")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("AIFORGE_HOME", "/tmp/aiforge-cold-start")))
    args = parser.parse_args()
    if args.bundle is None:
        args.bundle = registered_or_fitted(args.home)
    trees = {"this": ROOT / "src", **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    for src in trees.values():  # unmeasured: compiles each tree's bytecode (and the libraries') into its cache
        ready_seconds(src, args.bundle, args.home)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for _ in range(args.runs):  # alternating, so a change in the machine's load hits every tree alike
        for name, src in trees.items():
            runs[name].append(ready_seconds(src, args.bundle, args.home))
    load_ready = os.getloadavg()
    poller = (poller_effect(trees.get("baseline", trees["this"]), args.bundle, args.home, runs=args.poller_runs)
              if args.poller_runs else None)
    load_poller = os.getloadavg()
    gil = gil_overlap(args.bundle)
    rows = {name: {**summary(runs[name], src), "imports": import_profile(src),
                   "overlap_ms": overlap(src, args.bundle, args.home),
                   **step_costs(src, args.bundle, args.home)} for name, src in trees.items()}
    payload: dict[str, Any] = {
        "benchmark": "aiforge serve BUNDLE: spawn to /v2/health/ready",
        "command": f"python bench/cold_start.py --bundle BUNDLE --baseline-src BEFORE/src --runs {args.runs}",
        "machine": machine(), "load_average_before": load_before, "load_average_after_ready_runs": load_ready,
        "load_average_after_poller_runs": load_poller, "poller": poller,
        "load_average_after": os.getloadavg(), "bundle": str(args.bundle), "gil_overlap": gil,
        "int8_graph_mb": graph_mb(args.bundle), "trees": rows, "target_s": 0.6,
        "conditions": "bytecode compiled beforehand, each tree into its own PYTHONPYCACHEPREFIX (one unmeasured "
                      "start each); readiness polled every 10 ms through one HTTP client (a client per poll cost "
                      "~20 ms of CPU each, taken from the server on 2 cores)",
    }
    if "baseline" in rows:
        this, base = rows["this"], rows["baseline"]
        for key in ("ready_s_median", "cpu_s_to_ready_median", "main_thread_cpu_s_median",
                    "peak_rss_mb_after_requests_median"):
            payload[f"ratio_{key}_this_vs_baseline"] = round(this[key] / base[key], 3)
    print({k: (v["ready_s_best"], v["ready_s_median"], v["cpu_s_to_ready_median"], v["main_thread_cpu_s_median"],
               v["peak_rss_mb_after_requests_median"]) for k, v in rows.items()})
    print(json.dumps({k: (v["steps_cpu_ms"], v["parts_ms"]) for k, v in rows.items()}, indent=1))
    print(f"wrote {write_result('cold_start', payload)}")


if __name__ == "__main__":
    main()
