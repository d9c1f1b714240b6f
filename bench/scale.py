"""Scale-out benchmark: the BANKING77 int8 bundle served in-process vs on Ray Serve (1 and 2 replicas, and
``@serve.batch`` instead of aiforge's batcher), and batch inference over 100k texts (local, Ray Data 1 and 2 actors).

    python bench/scale.py [--duration 15] [--levels 1,16,64] [--rows 100000] [--bundle PATH] [--servers default]

``--servers default`` (the default): in-process and Ray Serve with 1 and 2 replicas on the default ingress
(``ScaleOptions().ray_ingress``); ``all`` adds the other ingress and ``@serve.batch``.

One run, one machine, the same load generator (src/aiforge/serve/loadgen.py, its own process, loopback)
for every server: single-text v2 requests drawn from the BANKING77 test set, closed loop. Without
``--bundle`` it fits a head-mode BANKING77 bundle (int8) first. Batch inference repeats the test set to
``--rows`` texts in one CSV; each backend's driver peak RSS is read from its own process. Writes
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

import aiforge as af
from _common import machine, shared_data, write_result
from aiforge.errors import AiforgeError
from aiforge.scale.options import ScaleOptions
from aiforge.serve.loadgen import aiforge_server_args, free_port, measure, running_server

ROUTE = "/v2/models/banking77/infer"


def fit_bundle(home: Path, data: Path, per_label: int) -> Path:
    """A head-mode BANKING77 bundle (all 77 intents) with an int8 graph, registered at ``home``.

    ``per_label`` > 0 fits on that many train and test texts per intent: serving and batch speed depend
    on the graph (MiniLM-L6 + a linear head), not on how many texts the head saw.
    """
    train, test = pd.read_csv(data / "train.csv"), pd.read_csv(data / "test.csv")
    if per_label > 0:
        train = train.groupby("category", group_keys=False).head(per_label)
        test = test.groupby("category", group_keys=False).head(max(5, per_label // 2))
    folder = home.parent / "fit-data"
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    spec = af.AppSpec.from_dict({
        "name": "banking77", "task": "text-classification",
        "data": {"train": str(folder / "train.csv"), "test": str(folder / "test.csv"),
                 "text_column": "text", "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head", "head": "linear", "max_length": 64},
        "optimize": {"quantize": True}, "serve": {"max_batch_size": 64, "max_wait_ms": 5},
    }, source="bench/scale.py")
    app = af.App(spec, home=home)
    app.fit(progress=False)
    return Path(app.export().path)


# What each process of a server's tree is, from its command line (Ray's workers name themselves ``ray::Class``).
# Order matters: the first match wins (Ray's dashboard agent before its dashboard, HAProxyManager before HAProxy).
ROLES = (("gcs_server", "gcs"), ("/raylet ", "raylet"), ("dashboard/agent.py", "dashboard_agent"),
         ("ray::DashboardAgent", "dashboard_agent"), ("dashboard/dashboard.py", "dashboard"),
         ("runtime_env/agent", "runtime_env_agent"), ("ray::RuntimeEnvAgent", "runtime_env_agent"),
         ("log_monitor", "log_monitor"), ("autoscaler/_private/monitor.py", "autoscaler_monitor"),
         ("ray::HAProxyManager", "haproxy_manager"), ("haproxy", "haproxy"), ("ray::ProxyActor", "proxy"),
         ("ray::ServeController", "controller"), ("ray::ServeReplica", "replica"), ("ray::", "other_ray_worker"))


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process below it."""
    return sum(tree_cpu_split(root).values())


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"  # aiforge serve's own process (in-process: the whole server)
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    return next((role for needle, role in ROLES if needle in f"{cmdline} "), "other")


def tree_cpu_split(root: int) -> dict[str, float]:
    """User + system CPU seconds of ``root`` and every process below it, by role (raylet, GCS, replica, ...).

    A process that exited inside a window is missed: its CPU is not in the split (the tree is read at
    both ends of each window, and every role in it runs for the whole window).
    """
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    split: dict[str, float] = {}
    for pid in tree:
        role = _role(pid, root)
        split[role] = split.get(role, 0.0) + times.get(pid, 0.0)
    return split


def serve_levels(name: str, args: list[str], *, texts: list[str], levels: list[int], duration: float,
                 env: dict[str, str], logdir: Path) -> dict[str, Any]:
    """Start a server command, warm it up, measure each level, stop it (the load average noted with each).

    Each level also records the CPU seconds the server's whole process tree spent per request: under
    other processes' load throughput follows the CPU share a server gets, its CPU per request does not.
    """
    print(f"== {name} (load average {os.getloadavg()[0]:.1f})", flush=True)
    port = int(args[args.index("--port") + 1])
    url = f"http://127.0.0.1:{port}"
    rows = []
    with running_server(args, port=port, env=env, timeout=300, log=logdir / f"{name}.log") as (proc, ready):
        measure(url, ROUTE, texts, concurrency=8, duration=2, protocol="v2")
        for c in levels:
            before = tree_cpu_split(proc.pid)
            load_before = os.getloadavg()[0]
            r = measure(url, ROUTE, texts, concurrency=c, duration=duration, protocol="v2")
            after = tree_cpu_split(proc.pid)
            split = {role: round(after[role] - before.get(role, 0.0), 2) for role in sorted(after)}
            cpu = sum(split.values())
            r.update(server_cpu_s=cpu, cpu_ms_per_request=1000 * cpu / max(1, r["requests"]),
                     cpu_s_by_process=split, cpu_share_by_process={k: round(v / cpu, 3) if cpu else 0.0
                                                                   for k, v in split.items()},
                     loadavg_1m_at_start=load_before, loadavg_1m=os.getloadavg()[0])
            print(f"   c={c:3d} {r['throughput_rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f}  p99 {r['p99_ms']:7.1f} ms  "
                  f"cpu {r['cpu_ms_per_request']:.1f} ms/req  errors {r['errors']}  {split}", flush=True)
            rows.append(r)
    return {"server": name, "ready_seconds": ready, "levels": rows}


SERVE_BATCH_CHILD = r'''
import asyncio, json, os, signal, sys, threading
import numpy as np
from fastapi import FastAPI, Request
from ray import serve
import ray
from aiforge.bundle.runtime import Runtime
bundle, port, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3]
app = FastAPI()

@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 2})
@serve.ingress(app)
class ServeBatch:
    """The same Runtime behind Ray's @serve.batch (no aiforge batcher, limits or error handling)."""
    def __init__(self, path):
        self.rt = Runtime.load(path, precision=precision, threads=2)
        self.rt.warmup()
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def probs(self, texts):
        return list(await asyncio.to_thread(self.rt.predict_proba, texts))
    @app.get("/v2/health/ready")
    async def ready(self):
        return {"ready": True}
    @app.post("/v2/models/banking77/infer")
    async def infer(self, request: Request):
        body = await request.json()
        rows = await asyncio.gather(*(self.probs(t) for t in body["inputs"][0]["data"]))
        return {"model_name": "banking77", "outputs": [{"name": "probabilities", "datatype": "FP32",
                "shape": [len(rows), len(rows[0])], "data": np.concatenate(rows).tolist()}]}

ray.init(include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(ServeBatch.bind(bundle), name="serve-batch", route_prefix="/")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
serve.shutdown(); ray.shutdown()
'''

BATCH_CHILD = r'''
import json, resource, sys, time
from aiforge.scale.batch import batch
bundle, csv_path, out, backend, actors, precision = sys.argv[1:7]
cpus = 2.0 / int(actors) if backend == "ray" else 2.0
r = batch(bundle, input=csv_path, output=out, backend=backend, actors=int(actors), cpus_per_actor=cpus,
          precision=precision, batch_size=256, progress=False)
print(json.dumps({**r.to_dict(), "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run_batch(bundle: Path, csv_path: Path, out: Path, backend: str, actors: int, precision: str,
              env: dict[str, str]) -> dict[str, Any]:
    print(f"== batch {backend} actors={actors}", flush=True)
    done = subprocess.run([sys.executable, "-c", BATCH_CHILD, str(bundle), str(csv_path), str(out), backend,
                           str(actors), precision], env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"batch {backend} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"   {result['rows_per_s']:.0f} texts/s, driver peak RSS {result['driver_peak_rss_mb']:.0f} MB", flush=True)
    return result


def partial(stage: str, servers: list[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
    """Write what was measured so far to scale_partial.json (a run cut short still leaves its numbers, and
    scale.json keeps the last whole run until this one ends)."""
    write_result("scale_partial", {"partial": stage, "servers": servers, "batch": batches})


def row_name(replicas: int, ingress: str) -> str:
    """A Ray Serve row's name: ``ray_serve_1_replica``, ``ray_serve_2_replicas_haproxy``, ..."""
    suffix = "_haproxy" if ingress == "haproxy" else ""
    return f"ray_serve_{replicas}_replica" + ("s" if replicas > 1 else "") + suffix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bundle", type=Path, default=None, help="a BANKING77 bundle folder (default: fit one)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--precision", default="int8", help="graph to serve (int8 unless the bundle has none)")
    parser.add_argument("--fit-per-label", type=int, default=0, help="fit on N texts per intent (0: all)")
    parser.add_argument("--servers", default="default",
                        help="comma-separated rows to run; default: in_process and 1 and 2 replicas on the default "
                             "ingress; all: every row")
    parser.add_argument("--home", type=Path, default=None, help="registry for the fitted bundle (default: a temp dir)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    # read before the run: partial() overwrites the file as rows finish
    previous = Path(__file__).parent / "results" / "scale.json"
    kept: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    if "partial" in kept:  # a file an older version of this bench left cut short: nothing in it to keep
        kept = {}
    load_at_start = os.getloadavg()
    data = shared_data() / "banking77"
    texts = pd.read_csv(data / "test.csv")["text"].tolist()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-scale-") as tmp:
        home = args.home or Path(tmp) / "home"
        logdir = Path(os.environ.get("SCALE_BENCH_LOGS") or Path(tmp) / "logs")
        logdir.mkdir(parents=True, exist_ok=True)
        bundle = args.bundle.resolve() if args.bundle else fit_bundle(home, data, args.fit_per_label)
        print(f"bundle: {bundle}", flush=True)
        env = dict(os.environ, AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   RAY_AUTH_MODE="disabled")
        common = ["--precision", args.precision, "--max-queue-items", "4096"]
        default_ingress = ScaleOptions().ray_ingress
        wanted = ({"in_process", row_name(1, default_ingress), row_name(2, default_ingress)}
                  if args.servers == "default" else set(args.servers.split(",")))
        runs: list[tuple[str, list[str], dict[str, str]]] = [
            ("in_process", aiforge_server_args([str(bundle)], port=free_port(), extra=common), {})]
        for ingress in ("proxy", "haproxy"):
            for replicas, cpus in ((1, "2"), (2, "1")):
                extra = [*common, "--backend", "ray", "--replicas", str(replicas), "--replica-cpus", cpus,
                         "--ray-ingress", ingress]
                runs.append((row_name(replicas, ingress), aiforge_server_args([str(bundle)], port=free_port(),
                                                                              extra=extra), {}))
        servers: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        for name, server_args, extra_env in runs:
            if name in wanted or "all" in wanted:
                for attempt in (1, 2):  # Ray gives its raylet 30 s to register: a loaded machine can miss that
                    try:
                        servers.append(serve_levels(name, server_args, texts=texts, levels=levels,
                                                    duration=args.duration, env={**env, **extra_env}, logdir=logdir))
                        break
                    except AiforgeError as exc:  # one server that does not start leaves the others' rows
                        tail = (logdir / f"{name}.log").read_text(errors="replace")[-2000:]
                        print(f"   {name} failed (attempt {attempt}): {exc}\n{tail}", flush=True)
                        failed.append({"server": name, "attempt": str(attempt), "error": str(exc), "log_tail": tail})
                partial(name, servers, [])
        if "ray_serve_1_replica_serve_batch" in wanted or "all" in wanted:
            port = free_port()
            servers.append(serve_levels("ray_serve_1_replica_serve_batch",
                                        [sys.executable, "-c", SERVE_BATCH_CHILD, str(bundle), str(port),
                                         args.precision, "--port", str(port)], texts=texts, levels=[max(levels)],
                                        duration=args.duration, env=env, logdir=logdir))
        batches: list[dict[str, Any]] = []
        batch_load = (os.getloadavg(), os.getloadavg())
        if not args.skip_batch:
            csv_path = Path(tmp) / "texts.csv"
            with csv_path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id", "text"])
                for i in range(args.rows):
                    writer.writerow([i, texts[i % len(texts)]])
            for backend, actors in (("local", 1), ("ray", 1), ("ray", 2)):
                batches.append(run_batch(bundle, csv_path, Path(tmp) / f"out-{backend}-{actors}", backend, actors,
                                         args.precision, env))
                partial(f"batch {backend} {actors}", servers, batches)
            batch_load = (batch_load[0], os.getloadavg())

    by = {s["server"]: {r["concurrency"]: r for r in s["levels"]} for s in servers}
    top = max(levels)
    base = by.get("in_process", {})
    ratios: dict[str, Any] = {}
    for name in [n for n in by if n != "in_process"]:
        for c, row in by[name].items():
            if c in base:
                ratios[f"{name}_vs_in_process_throughput_c{c}"] = row["throughput_rps"] / base[c]["throughput_rps"]
        if 1 in by[name] and 1 in base:  # at c=1 the added latency is the Ray path's cost per request
            ratios[f"{name}_added_p50_ms_c1"] = by[name][1]["p50_ms"] - base[1]["p50_ms"]
        if top in by[name] and top in base and "cpu_ms_per_request" in base[top]:
            # CPU per request, in-process over Ray: the throughput ratio an idle machine would show
            ratios[f"{name}_vs_in_process_cpu_efficiency_c{top}"] = (base[top]["cpu_ms_per_request"]
                                                                     / by[name][top]["cpu_ms_per_request"])
    for two, one in (("ray_serve_2_replicas", "ray_serve_1_replica"),
                     ("ray_serve_2_replicas_haproxy", "ray_serve_1_replica_haproxy")):
        if top in by.get(two, {}) and top in by.get(one, {}):
            ratios[f"{two}_vs_{one}_throughput_c{top}"] = (by[two][top]["throughput_rps"]
                                                           / by[one][top]["throughput_rps"])
    batch_from = None
    if not batches and kept.get("batch"):  # --skip-batch: keep the last batch rows, with their own command
        batches = kept["batch"]
        batch_from = kept.get("batch_from") or {"command": kept.get("command"),
                                                "date": kept.get("machine", {}).get("date")}
    elif batches:
        batch_from = {"rows": args.rows, "loadavg_at_start": batch_load[0], "loadavg_at_end": batch_load[1]}
    if batches:
        local = batches[0]["rows_per_s"]
        for b in batches[1:]:
            ratios[f"batch_ray_{b['actors']}_actors_vs_local"] = b["rows_per_s"] / local
    payload = {
        "benchmark": "BANKING77 int8 bundle: single-text v2 requests, closed loop, loopback; batch over repeated "
                     "BANKING77 test texts",
        "command": f"nice python bench/scale.py --duration {args.duration:g} --levels {args.levels} --rows {args.rows} "
                   f"--fit-per-label {args.fit_per_label} --precision {args.precision} --servers {args.servers}"
                   + (f" --bundle {args.bundle}" if args.bundle else "") + (" --skip-batch" if args.skip_batch else ""),
        "machine": {**machine(), "loadavg_at_end": os.getloadavg()},
        "loadavg_at_start": load_at_start,
        "batching_inside_replica": "aiforge Batcher (create_app in each replica); @serve.batch measured as "
                                   "ray_serve_1_replica_serve_batch",
        "ingress": "ray_serve_*_haproxy rows: Ray's HAProxy + direct-ingress mode (--ray-ingress haproxy, the "
                   "default) with aiforge's lines (aiforge.scale.haproxy: per-replica maxconn, bounded queue, "
                   "JSON 503, replays); ray_serve_* rows without the suffix: Ray's Python HTTP proxy "
                   "(--ray-ingress proxy)",
        "default_ingress": ScaleOptions().ray_ingress,
        "servers": servers,
        "failed_servers": failed,
        "batch": batches,
        **({"batch_from": batch_from} if batch_from else {}),
        "ratios": ratios,
    }
    if kept:  # read-modify-write: the last run moves to other_runs; keys this run does not set stay
        moved = ("command", "machine", "loadavg_at_start", "servers", "ratios", "note")
        moved += () if args.skip_batch else ("batch", "batch_from")  # batch rows kept above stay where they are
        last = {k: kept[k] for k in moved if k in kept}
        payload = {**{k: v for k, v in kept.items() if k not in payload and k not in last}, **payload,
                   "other_runs": [last, *kept.get("other_runs", [])]}
    print(json.dumps(ratios, indent=2))
    print(f"wrote {write_result('scale', payload)}")
    (previous.parent / "scale_partial.json").unlink(missing_ok=True)  # the whole run is in scale.json now


if __name__ == "__main__":
    main()
