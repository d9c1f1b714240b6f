"""Cold start: ``aiforge serve BUNDLE`` spawn to ``/v2/health/ready``, this tree against another.

    python bench/cold_start.py [--bundle PATH] [--baseline-src ../main/src] [--runs 5]

Without ``--bundle`` it serves ``banking77`` from the registry (``--home``, default ``$AIFORGE_HOME``),
fitting and exporting the head-mode BANKING77 bundle there first when it is not registered (minutes).

Starts the server ``--runs`` times for each source tree (alternating, same bundle, same run) and
reports best and median seconds from spawn to ready (the model loaded, verified and warmed up)
and the CPU seconds the server process had used by then (user + system, all threads: less
sensitive than wall time to a busy machine), plus what the start-up imports cost (``python -X
importtime`` of the CLI and the serving stack, cumulative microseconds of the top-level modules).
Also the cost of each start-up step run one after another in a fresh interpreter (``steps_ms``:
importing the CLI, the server settings, onnxruntime, verifying the bundle's files, opening the
runtime's graph and tokenizer, the warm-up, importing FastAPI and the app, building the app). The
server overlaps the loading steps (native code, off the GIL) with the imports (``serve/preload.py``),
so ready time is about the longer of the two paths, not their sum. Writes bench/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import ROOT, machine, write_result
from aiforge.serve.loadgen import aiforge_server_args, free_port, running_server

IMPORTS = ("import aiforge.cli; from aiforge.serve.app import create_app; import uvicorn; "
           "from aiforge.bundle.runtime import Runtime")


# Each start-up step of ``aiforge serve BUNDLE``, one after another (no overlap), milliseconds.
STEPS = """
import json, sys, time
t = time.perf_counter(); out = {}
def done(step):
    global t
    now = time.perf_counter(); out[step] = round((now - t) * 1000, 1); t = now
import aiforge.cli; done("import aiforge.cli (typer, rich, kinds' commands)")
from aiforge.serve.config import server_config
config = server_config([sys.argv[1]]); done("server_config (pydantic)")
import onnxruntime, tokenizers; done("import onnxruntime, tokenizers")
from aiforge.bundle.format import read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime, available_cpus
path = Registry(None).resolve(sys.argv[1]); manifest = read_manifest(path); done("verify every file (sha256)")
rt = Runtime.load(sys.argv[1], precision=config.precision, threads=config.threads or available_cpus())
done("Runtime.load (verify again, tokenizer, onnxruntime session)")
rt.warmup(); done("warm-up")
from aiforge.serve.app import create_app; done("import aiforge.serve.app (fastapi, routes)")
import uvicorn; done("import uvicorn")
create_app([sys.argv[1]], config=config); done("create_app")
print(json.dumps(out))
"""


def step_costs(src: Path, bundle: Path, home: Path) -> dict[str, float]:
    """Milliseconds of each start-up step, run one after another in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(src), AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", STEPS, str(bundle)], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    costs: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return costs


def registered_or_fitted(home: Path) -> Path:
    """The folder of ``banking77`` in ``home``'s registry, fitted and exported there first if absent."""
    from aiforge.bundle.registry import Registry
    from aiforge.errors import RegistryError
    from optimize import fit_bundle

    try:
        return Registry(home).resolve("banking77")
    except RegistryError:
        return fit_bundle(home)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready_seconds(src: Path, bundle: Path, home: Path) -> tuple[float, float]:
    """Seconds from spawn to ready, and the server's CPU seconds by then."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(src), AIFORGE_HOME=str(home), HF_HUB_OFFLINE="1")
    with running_server(aiforge_server_args([str(bundle)], port=port), port=port, env=env, timeout=300) as (p, t):
        return t, cpu_seconds(p.pid)


def import_profile(src: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], capture_output=True, text=True,
                          env=env, timeout=300)
    top: dict[str, int] = {}
    total = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and len(m.group(2)) <= 2:  # top-level imports and their direct children
            top[m.group(3)] = max(top.get(m.group(3), 0), int(m.group(1)))
        if m and not m.group(2):
            total += int(m.group(1))
    heavy = sorted(top.items(), key=lambda kv: -kv[1])[:15]
    return {"total_ms": total / 1000, "top_ms": {k: v / 1000 for k, v in heavy}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="a MiniLM BANKING77 bundle folder "
                                                                 "[default: banking77 in --home, fitted if absent]")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another checkout's src/ to compare")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("AIFORGE_HOME", "/tmp/aiforge-cold-start")))
    args = parser.parse_args()
    if args.bundle is None:
        args.bundle = registered_or_fitted(args.home)
    trees = {"this": ROOT / "src", **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in trees}
    cpu: dict[str, list[float]] = {k: [] for k in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            wall, used = ready_seconds(src, args.bundle, args.home)
            times[name].append(wall)
            cpu[name].append(used)
    rows = {name: {"src": str(src), "ready_s_best": min(times[name]), "ready_s_median": statistics.median(times[name]),
                   "runs": times[name], "cpu_s_to_ready_median": statistics.median(cpu[name]), "cpu_s_runs": cpu[name],
                   "imports": import_profile(src), "steps_ms": step_costs(src, args.bundle, args.home)}
            for name, src in trees.items()}
    payload: dict[str, Any] = {
        "benchmark": "aiforge serve BUNDLE: spawn to /v2/health/ready",
        "command": f"python bench/cold_start.py --baseline-src BEFORE/src --runs {args.runs}",
        "machine": machine(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "bundle": str(args.bundle), "trees": rows,
        "target_s": 0.6,
    }
    if "baseline" in rows:
        payload["ratio_median_this_vs_baseline"] = rows["this"]["ready_s_median"] / rows["baseline"]["ready_s_median"]
        payload["ratio_cpu_this_vs_baseline"] = (rows["this"]["cpu_s_to_ready_median"]
                                                 / rows["baseline"]["cpu_s_to_ready_median"])
    print({k: (v["ready_s_best"], v["ready_s_median"], v["cpu_s_to_ready_median"]) for k, v in rows.items()})
    print(json.dumps({k: v["steps_ms"] for k, v in rows.items()}, indent=1))
    print(f"wrote {write_result('cold_start', payload)}")


if __name__ == "__main__":
    main()
