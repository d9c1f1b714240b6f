"""Serving benchmark: aiforge (fp32, int8) against peers on PyTorch (A, B) and on the same int8 graph (C, D, E).

    python bench/serve.py [--duration 20] [--levels 1,8,64] [--only NAME,...] [--keep-as KEY]

Run with the bench environment's Python (bench/.venv, `make bench-serve` builds it), which
has the project's pins plus bentoml and litserve. One run, one machine: fits a head-mode
BANKING77 model, exports the aiforge bundle and the same PyTorch head, then serves it with

- A: FastAPI + sentence-transformers (PyTorch), one text per call;
- B: BentoML 1.4 adaptive batching, PyTorch;
- C: LitServe, batching on (max batch 64, 5 ms timeout), the bundle's int8 ONNX graph;
- D: BentoML 1.4 adaptive batching (max batch 64) on the same int8 graph;
- E: hand-written FastAPI + onnxruntime on the same int8 graph, no batching;
- aiforge fp32 and int8 (``aiforge serve``, v2 protocol: label, score and all 77 probabilities).

C, D and E load the bundle's graph file and tokenizer.json by path (bench/baselines/onnx_common.py).
Each server runs alone, pinned to one core (``taskset -c CPU``, ``--server-cpu``, default 1), and the
load generator (aiforge's serve/loadgen.py, a separate process) to the other (``--load-cpu``, default
0). For each server: start-to-ready, closed-loop throughput and p50/p95/p99 latency of single-text
requests drawn from the BANKING77 test set at each concurrency, and resident memory after the load.
Also the offline figure (Runtime.predict_proba on the whole test set, batches of 64, no HTTP) on the
server's core with one thread, before and after the servers, and served c=max / the higher offline
figure. Writes bench/results/serve.json (with ``--keep-as KEY``: into its key KEY, the rest of the file kept,
for a rerun on another machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

import aiforge as af
from _common import RESULTS, ROOT, machine, shared_data, write_result
from aiforge.bundle.runtime import Runtime
from aiforge.serve.benchmark import rss_mb
from aiforge.serve.loadgen import aiforge_server_args, free_port, measure, measure_levels, running_server

BASELINES = ROOT / "bench" / "baselines"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (BentoML serves from worker children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(c) for c in children)
    return out


def torch_loaded(pid: int) -> bool:
    """Whether the process or a child has libtorch mapped (i.e. imported torch)."""
    return any("libtorch" in Path(f"/proc/{p}/maps").read_text() for p in process_tree(pid))


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the process and its children, in MB."""
    return sum(rss_mb(p) for p in process_tree(pid))


def run_server(name: str, args: list[str], port: int, ready_path: str, route: str, protocol: str,
               texts: list[str], levels: list[int], duration: float, env: dict[str, str],
               logdir: Path, server_cpu: int) -> dict[str, Any]:
    print(f"== {name}  (load average {os.getloadavg()[0]:.2f})", flush=True)
    pinned = ["taskset", "-c", str(server_cpu), *args]
    tree: list[int] = []
    try:
        with running_server(pinned, port=port, ready_path=ready_path, env=env, timeout=300,
                            log=logdir / f"{name}.log") as (proc, ready):
            print(f"   ready in {ready:.2f} s", flush=True)
            rows = measure_levels(f"http://127.0.0.1:{port}", route, texts, levels=levels, duration=duration,
                                  protocol=protocol, warmup_concurrency=8, unit="req/s")
            tree = process_tree(proc.pid)
            return {"server": name, "ready_seconds": ready, "rss_mb_after_load": tree_rss_mb(proc.pid),
                    "torch_imported": torch_loaded(proc.pid), "load_average_1m_after": os.getloadavg()[0],
                    "levels": rows}
    finally:
        # LitServe's worker processes outlive a SIGTERM to its main process (they kept polling, on the
        # server core, through the later servers' runs): stop whatever of the tree is left
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


PEERS_SAME_GRAPH = ("peer_c_litserve_onnx_int8", "peer_d_bentoml_onnx_int8", "peer_e_fastapi_onnx_int8")
TORCH_PEERS = ("baseline_a_fastapi_sentence_transformers", "baseline_b_bentoml_adaptive_batching")


def offline(bundle: Path, texts: list[str], *, cpu: int) -> dict[str, float]:
    """Texts/s of Runtime.predict_proba over the whole test set, on core ``cpu`` with one thread."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        graphs = json.loads((bundle / "pipeline.json").read_text())["graphs"]
        out = {}
        for precision in ("fp32", "int8"):
            if precision not in graphs:
                continue
            rt = Runtime.load(bundle, precision=precision, threads=1)
            rt.predict_proba(texts[:256])
            best = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                rt.predict_proba(texts)
                best = max(best, len(texts) / (time.perf_counter() - t0))
            out[precision] = best
            print(f"offline {precision} (core {cpu}, 1 thread): {best:.0f} texts/s", flush=True)
        return out
    finally:
        os.sched_setaffinity(0, before)


def fit_bundle(home: Path, head_dir: Path) -> Path:
    """Fit the head-mode BANKING77 model, export the bundle, and write the same PyTorch head for A and B."""
    from safetensors.torch import save_file

    data = shared_data() / "banking77"
    spec = af.AppSpec.from_dict({
        "name": "banking77", "task": "text-classification",
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                 "text_column": "text", "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head", "head": "linear"},
    }, source="bench/serve.py")
    app = af.App(spec, home=home)
    result = app.fit(progress=False)
    exported = app.export()
    linear = result.fitted.model.head[-1]
    save_file({"weight": linear.weight.detach().contiguous(), "bias": linear.bias.detach().contiguous()},
              str(head_dir / "head.safetensors"))
    (head_dir / "labels.json").write_text(json.dumps(result.fitted.labels))
    return Path(exported.path)


def head_from_graph(bundle: Path, head_dir: Path) -> None:
    """Write A and B's head (head.safetensors, labels.json) from the bundle's fp32 graph: its last Gemm."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file

    graph = onnx.load(str(bundle / json.loads((bundle / "pipeline.json").read_text())["graphs"]["fp32"])).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    gemm = [n for n in graph.node if n.op_type == "Gemm"][-1]
    save_file({"weight": weights[gemm.input[1]].copy(), "bias": weights[gemm.input[2]].copy()},
              str(head_dir / "head.safetensors"))
    (head_dir / "labels.json").write_text(json.dumps(json.loads((bundle / "pipeline.json").read_text())["labels"]))


def server_table(port: int, bundle: Path, graphs: dict[str, str]) -> dict[str, tuple[list[str], str, str, str]]:
    """Each server's command line, ready path, route and load-generator protocol, by name."""
    py, bentoml = sys.executable, str(Path(sys.executable).with_name("bentoml"))
    table: dict[str, tuple[list[str], str, str, str]] = {
        TORCH_PEERS[0]: ([py, "-m", "uvicorn", "fastapi_st:app", "--port", str(port), "--no-access-log",
                          "--app-dir", str(BASELINES)], "/ready", "/predict", "plain"),
        TORCH_PEERS[1]: ([bentoml, "serve", "bento_service:Classifier", "--port", str(port), "--host", "127.0.0.1",
                          "--working-dir", str(BASELINES)], "/readyz", "/predict", "bentoml"),
        PEERS_SAME_GRAPH[0]: ([py, str(BASELINES / "litserve_onnx.py"), str(port)], "/health", "/predict", "plain"),
        PEERS_SAME_GRAPH[1]: ([bentoml, "serve", "bento_onnx:OnnxClassifier", "--port", str(port), "--host",
                               "127.0.0.1", "--working-dir", str(BASELINES)], "/readyz", "/predict", "bentoml"),
        PEERS_SAME_GRAPH[2]: ([py, "-m", "uvicorn", "fastapi_onnx:app", "--port", str(port), "--no-access-log",
                               "--app-dir", str(BASELINES)], "/ready", "/predict", "plain"),
    }
    for precision in ("fp32", "int8"):
        if precision in graphs:
            table[f"aiforge_{precision}"] = (
                aiforge_server_args([str(bundle)], port=port, extra=["--precision", precision]),
                "/v2/health/ready", "/v2/models/banking77/infer", "v2")
    return table


def summarise(servers: list[dict[str, Any]], top: int, ceiling: dict[str, float]) -> dict[str, Any]:
    """Ratios at the top concurrency: aiforge against each peer and the best same-graph peer; served/offline."""
    by = {s["server"]: s for s in servers}

    def level(server: str) -> dict[str, Any] | None:
        s = by.get(server)
        return next((r for r in s["levels"] if r["concurrency"] == top), None) if s else None

    ratios: dict[str, Any] = {}
    peers = [p for p in PEERS_SAME_GRAPH if level(p)]
    best_peer = max(peers, key=lambda p: level(p)["throughput_rps"]) if peers else None  # type: ignore[index]
    if best_peer:
        ratios["best_same_graph_peer"] = best_peer
    before, after = level("aiforge_int8_before"), level("aiforge_int8")
    if before and after:
        ratios[f"aiforge_int8_vs_before_throughput_c{top}"] = after["throughput_rps"] / before["throughput_rps"]
        ratios[f"aiforge_int8_vs_before_p99_ratio_c{top}"] = after["p99_ms"] / before["p99_ms"]
    for name in ("aiforge_int8", "aiforge_fp32"):
        mine = level(name)
        if not mine:
            continue
        for base in (*TORCH_PEERS, *PEERS_SAME_GRAPH):
            other = level(base)
            if other and other["throughput_rps"] > 0:
                ratios[f"{name}_vs_{base}_throughput_c{top}"] = mine["throughput_rps"] / other["throughput_rps"]
                ratios[f"{name}_vs_{base}_p99_ratio_c{top}"] = mine["p99_ms"] / other["p99_ms"]
        if best_peer:
            other = level(best_peer)
            assert other is not None
            key = f"{name}_vs_best_same_graph_peer"
            ratios[f"{key}_throughput_c{top}"] = mine["throughput_rps"] / other["throughput_rps"]
            ratios[f"{key}_p99_ratio_c{top}"] = mine["p99_ms"] / other["p99_ms"]
        precision = name.removeprefix("aiforge_")
        if precision in ceiling:
            ratios[f"{name}_served_c{top}_vs_offline"] = mine["throughput_rps"] / ceiling[precision]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--only", default="", help="comma-separated server names (default: all)")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="an exported head-mode BANKING77 bundle instead of fitting one")
    parser.add_argument("--before-src", type=Path, default=None,
                        help="another checkout's src/: also measure its aiforge int8 server (aiforge_int8_before)")
    parser.add_argument("--head-dir", type=Path, default=None,
                        help="with --bundle: A and B's head (default: read from the bundle's fp32 graph)")
    parser.add_argument("--keep-as", default=None,
                        help="write this run into serve.json's key KEY, keeping the rest of the file")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    only = {x for x in args.only.split(",") if x}
    texts = pd.read_csv(shared_data() / "banking77" / "test.csv")["text"].tolist()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-serve-") as tmp:
        home, logdir = Path(tmp) / "home", Path(tmp) / "logs"
        logdir.mkdir()
        if args.bundle:
            bundle = args.bundle.resolve()
            head_dir = args.head_dir.resolve() if args.head_dir else Path(tmp) / "head"
            if not args.head_dir:
                head_dir.mkdir()
                head_from_graph(bundle, head_dir)
        else:
            head_dir = Path(tmp) / "head"
            head_dir.mkdir()
            bundle = fit_bundle(home, head_dir)
        graphs = json.loads((bundle / "pipeline.json").read_text())["graphs"]
        ceiling = offline(bundle, texts, cpu=args.server_cpu)
        # from here on this process (and the load generator it spawns) stays on its own core
        os.sched_setaffinity(0, {args.load_cpu})
        env = dict(os.environ, AIFORGE_HOME=str(home), HEAD_DIR=str(head_dir), BUNDLE_DIR=str(bundle),
                   PRECISION="int8", RAY_AUTH_MODE="disabled", PYTHONPATH=str(BASELINES),
                   BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", LITSERVE_DISABLE_TELEMETRY="1")
        servers = []
        names = list(server_table(0, bundle, graphs))
        if args.before_src and "int8" in graphs:
            names.insert(names.index("aiforge_int8"), "aiforge_int8_before")
        for name in names:
            if only and name not in only:
                continue
            port = free_port()
            before = name == "aiforge_int8_before"
            cmd, ready_path, route, protocol = server_table(port, bundle, graphs)["aiforge_int8" if before else name]
            run_env = dict(env, PYTHONPATH=f"{args.before_src.resolve()}:{BASELINES}") if before and args.before_src \
                else env
            servers.append(run_server(name, cmd, port, ready_path, route, protocol, texts, levels, args.duration,
                                      run_env, logdir, args.server_cpu))
        short = None
        best = "int8" if "int8" in graphs else "fp32"
        port = free_port()
        with running_server(["taskset", "-c", str(args.server_cpu),
                             *aiforge_server_args([str(bundle)], port=port, extra=["--precision", best])],
                            port=port, env=env):
            short = measure(f"http://127.0.0.1:{port}", "/v2/models/banking77/infer", ["what is my balance"],
                            concurrency=1, duration=min(args.duration, 10), protocol="v2")

        # the offline figure again, now the servers are done: a machine whose load changed during the run
        # would otherwise skew served/offline; the ratio uses the higher of the two
        ceiling_after = offline(bundle, texts, cpu=args.server_cpu)
    top = max(levels)
    ratios = summarise(servers, top, {k: max(v, ceiling_after.get(k, 0.0)) for k, v in ceiling.items()})
    payload = {
        "benchmark": "single-text requests, BANKING77 test sentences, closed loop, loopback",
        "command": f"bench/.venv/bin/python bench/serve.py --duration {args.duration:g} --levels {args.levels}"
                   + (" --bundle BUNDLE" if args.bundle else ""),
        "machine": machine(),
        "pinning": {"server": f"taskset -c {args.server_cpu}", "load_generator": f"core {args.load_cpu}",
                    "offline": f"core {args.server_cpu}, 1 onnxruntime thread"},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "duration_s": args.duration,
        "offline_ceiling_texts_per_s": ceiling,
        "offline_ceiling_texts_per_s_after_servers": ceiling_after,
        "short_sentence_c1": short,
        "servers": servers,
        "ratios": ratios,
        "note": ("A and B run the PyTorch model; C, D and E run the bundle's own int8 ONNX graph and tokenizer "
                 "and answer label + score; aiforge answers the v2 protocol with label, score and all "
                 "probabilities."),
    }
    print(json.dumps(ratios, indent=2))
    if args.keep_as:
        payload["command"] += (f" --only {args.only}" if args.only else "") + f" --keep-as {args.keep_as}"
        path = RESULTS / "serve.json"
        payload = {**(json.loads(path.read_text()) if path.exists() else {}), args.keep_as: payload}
    print(f"wrote {write_result('serve', payload)}")


if __name__ == "__main__":
    main()
