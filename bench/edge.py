"""Edge packages on one core and 256 MB: size, dependency install size, cold start, RSS, latency.

    python bench/edge.py --bundle PATH [--bundle PATH ...] [--requests 50]

For each bundle (a text and an image classifier), builds its edge package (``aiforge export NAME
--edge``) and measures, with the runner pinned to core 0 (``taskset -c 0``) in a memory cgroup
limited to 256 MB (what a container's ``--memory=256m`` sets: resident memory and page cache; run
as root), in isolated mode (``python -I``) with an empty environment:

- package size (folder and .zip) and the installed size of its pinned dependencies (the files
  each distribution's RECORD lists, in this venv);
- cold start to first prediction: process spawn to the prediction printed (``run.py ITEM``), best
  and median of 5;
- single-item latency: ``run.py --serve`` on loopback, ``--requests`` sequential POST /predict of
  one item, p50/p99, then the server's peak RSS (VmHWM) and the cgroup's peak usage;
- whether ``run.py ITEM`` also runs under a 256 MB *address-space* cap (``prlimit --as``: virtual
  memory, stricter than any resident limit: numpy and onnxruntime map ~150 MB before a graph loads).

Writes bench/results/edge.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from _common import ROOT, machine, shared_data, write_result
from aiforge.bundle.edge import EDGE_TASKS, build_edge
from aiforge.serve.loadgen import free_port

LIMIT_BYTES = 256 << 20
AS_LIMIT = ["taskset", "-c", "0", "prlimit", f"--as={LIMIT_BYTES}"]
ENV = {"PATH": "/usr/bin:/bin"}


class MemoryGroup:
    """A memory cgroup (v2, else v1) capped at ``LIMIT_BYTES``; ``prefix`` runs a command inside it on core 0."""

    def __init__(self, name: str) -> None:
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").is_file():
            self.path, self.limit_file, self.peak_file = root / name, "memory.max", "memory.peak"
        else:
            self.path, self.limit_file, self.peak_file = (root / "memory" / name, "memory.limit_in_bytes",
                                                          "memory.max_usage_in_bytes")
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / self.limit_file).write_text(str(LIMIT_BYTES))
        except OSError as exc:
            raise SystemExit(f"cannot create the 256 MB memory cgroup {self.path} ({exc}); run as root") from exc
        self.prefix = ["taskset", "-c", "0", "sh", "-c", f'echo $$ > {self.path / "cgroup.procs"}; exec "$@"', "sh"]

    def peak_mb(self) -> float | None:
        try:
            return int((self.path / self.peak_file).read_text()) / 1e6
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / self.peak_file).write_text("0")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


LIMIT: list[str] = []  # set in main: the memory group's prefix


def install_bytes(dist: str) -> int:
    files = metadata.files(dist) or []
    return sum(f.locate().stat().st_size for f in files if Path(f.locate()).is_file())


def sample_items(task: str) -> list[str]:
    if task == "text-classification":
        return pd.read_csv(shared_data() / "banking77" / "test.csv")["text"].tolist()[:50]
    from PIL import Image

    from aiforge.tasks.image.samples import load_fashion_mnist

    images, _ = load_fashion_mnist("test")
    folder = Path(tempfile.mkdtemp(prefix="aiforge-edge-images-"))
    paths = []
    for i in range(20):
        path = folder / f"{i}.png"
        Image.fromarray(images[i]).save(path)
        paths.append(str(path))
    return paths


def cold_start(package: Path, item: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*LIMIT, sys.executable, "-I", str(package / "run.py"), "--threads", "1", item],
                          capture_output=True, text=True, env=ENV, timeout=300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or "label" not in proc.stdout:
        raise SystemExit(f"run.py failed under the limits: {proc.stderr[-2000:]}")
    return elapsed


def address_space_check(package: Path, item: str) -> dict[str, Any]:
    """Whether ``run.py ITEM`` runs under a 256 MB address-space cap, and the error's last line if not."""
    proc = subprocess.run([*AS_LIMIT, sys.executable, "-I", str(package / "run.py"), "--threads", "1", item],
                          capture_output=True, text=True, env=ENV, timeout=300)
    ok = proc.returncode == 0 and "label" in proc.stdout
    return {"runs": ok, **({} if ok else {"error": (proc.stderr.strip().splitlines() or [""])[-1][-300:]})}


_PEAK = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
status = open("/proc/self/status").read().splitlines()
print(next(int(line.split()[1]) for line in status if line.startswith("VmPeak")), file=sys.stderr)
"""


def address_space_peak_mb(package: Path, item: str) -> float:
    """The largest virtual address space ``run.py ITEM`` reaches (VmPeak) on core 0 with no cap: what
    ``prlimit --as`` compares with its limit."""
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-I", "-c", _PEAK, str(package / "run.py"),
                           "--threads", "1", item], capture_output=True, text=True, env=ENV, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"run.py failed: {proc.stderr[-2000:]}")
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def served_latency(package: Path, task: str, items: list[str], n: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([*LIMIT, sys.executable, "-I", str(package / "run.py"), "--serve", "--port", str(port),
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        assert proc.stdout is not None
        if b"serving" not in proc.stdout.readline():
            raise SystemExit(f"run.py --serve failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        bodies = [json.dumps({"inputs": [x if task == "text-classification" else
                                         base64.b64encode(Path(x).read_bytes()).decode()]}).encode() for x in items]
        times = []
        for i in range(n + 5):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=bodies[i % len(bodies)],
                                         headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            if i >= 5:  # the first few warm the graph up
                times.append((time.perf_counter() - t0) * 1000)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        # taskset and prlimit exec the runner, so proc.pid is the Python process itself
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        times.sort()
        return {"requests": n, "p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1,
                                                                                          int(0.99 * len(times)))],
                "peak_rss_mb": hwm / 1024}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--keep-other-tasks", action="store_true",
                        help="keep the previous JSON's packages of tasks not measured now (each keeps its date)")
    args = parser.parse_args()
    rows = []
    group = MemoryGroup(f"aiforge-edge-{os.getpid()}")
    LIMIT[:] = group.prefix
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-edge-") as tmp:
        for i, bundle in enumerate(args.bundle):
            package = build_edge(bundle, out=Path(tmp) / f"edge{i}")
            items = sample_items(package.task)
            group.reset_peak()
            starts = sorted(cold_start(package.folder, items[k]) for k in range(5))
            cold_peak = group.peak_mb()
            deps = {d: install_bytes(d) / 1e6 for d in EDGE_TASKS[package.task]}
            row = {
                "bundle": str(bundle), "task": package.task, "graph": package.graph,
                "package_mb": package.folder_bytes / 1e6, "zip_mb": package.zip_bytes / 1e6,
                "requirements": (package.folder / "requirements.txt").read_text().split(),
                "dependency_install_mb": deps, "dependency_install_mb_total": sum(deps.values()),
                "cold_start_to_first_prediction_s": {"best": starts[0], "median": starts[2]},
                "cgroup_peak_mb_cold_start": cold_peak,
                "single_item_latency": served_latency(package.folder, package.task, items, args.requests),
                "cgroup_peak_mb_serving": group.peak_mb(),
                "address_space_256mb": address_space_check(package.folder, items[0]),
                "address_space_peak_mb_uncapped": address_space_peak_mb(package.folder, items[0]),
            }
            print(json.dumps(row, indent=2), flush=True)
            rows.append(row)
    if args.keep_other_tasks:
        previous = json.loads((ROOT / "bench" / "results" / "edge.json").read_text())
        measured = {row["task"] for row in rows}
        for row in previous["packages"]:
            if row["task"] not in measured:
                rows.append({**row, "measured_in_an_earlier_run": {
                    "date": row.get("measured_in_an_earlier_run", {}).get("date", previous["machine"]["date"]),
                    "load_average_before": previous["load_average_before"]}})
    payload = {
        "benchmark": "edge packages: one core (taskset -c 0), a 256 MB memory cgroup, python -I",
        "command": "python bench/edge.py --bundle TEXT_BUNDLE --bundle IMAGE_BUNDLE",
        "limits": {"cpu": "taskset -c 0", "memory": f"memory cgroup {group.limit_file}={LIMIT_BYTES}",
                   "also_checked": "prlimit --as=268435456 (virtual address space)"},
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "packages": rows,
    }
    group.remove()
    print(f"wrote {write_result('edge', payload)}")


if __name__ == "__main__":
    main()
