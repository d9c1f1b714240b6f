"""Serving benchmark: aiforge (fp32, int8) vs FastAPI + sentence-transformers (A) vs BentoML (B).

    python bench/serve.py [--duration 20] [--levels 1,8,64] [--skip-bentoml]

Run with the bench environment's Python (bench/.venv, `make bench-serve` builds it), which
has the project's pins plus bentoml. One run, one machine: fits a head-mode BANKING77 model,
exports the aiforge bundle and the same PyTorch head for the baselines, then for each server
measures start-to-ready, closed-loop throughput and p50/p95/p99 latency with single-text
requests drawn from the BANKING77 test set at each concurrency (load from a separate
process, loopback only), and resident memory after the load. Also the offline ceiling
(Runtime.predict_proba on the whole test set, no HTTP). Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

import aiforge as af
from _common import ROOT, machine, shared_data, write_result
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
               logdir: Path) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    with running_server(args, port=port, ready_path=ready_path, env=env, timeout=300,
                        log=logdir / f"{name}.log") as (proc, ready):
        rows = measure_levels(f"http://127.0.0.1:{port}", route, texts, levels=levels, duration=duration,
                              protocol=protocol, warmup_concurrency=8, unit="req/s")
        return {"server": name, "ready_seconds": ready, "rss_mb_after_load": tree_rss_mb(proc.pid),
                "torch_imported": torch_loaded(proc.pid), "levels": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--skip-bentoml", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    data = shared_data() / "banking77"
    texts = pd.read_csv(data / "test.csv")["text"].tolist()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-serve-") as tmp:
        home, head_dir, logdir = Path(tmp) / "home", Path(tmp) / "head", Path(tmp) / "logs"
        head_dir.mkdir()
        logdir.mkdir()
        spec = af.AppSpec.from_dict({
            "name": "banking77", "task": "text-classification",
            "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                     "text_column": "text", "label_column": "category"},
            "model": {"backbone": "minilm-l6", "mode": "head", "head": "linear"},
        }, source="bench/serve.py")
        app = af.App(spec, home=home)
        result = app.fit(progress=False)
        exported = app.export()
        from safetensors.torch import save_file

        linear = result.fitted.model.head[-1]
        save_file({"weight": linear.weight.detach().contiguous(), "bias": linear.bias.detach().contiguous()},
                  str(head_dir / "head.safetensors"))
        (head_dir / "labels.json").write_text(json.dumps(result.fitted.labels))
        del app, result

        graphs = json.loads((exported.path / "pipeline.json").read_text())["graphs"]
        # offline ceiling: no HTTP, the whole test set in batches of 64
        ceiling = {}
        for precision in ("fp32", "int8"):
            if precision not in graphs:
                continue
            rt = af.load(exported.path, precision=precision)
            rt.predict_proba(texts[:256])
            t0 = time.perf_counter()
            rt.predict_proba(texts)
            ceiling[precision] = len(texts) / (time.perf_counter() - t0)
            print(f"offline ceiling {precision}: {ceiling[precision]:.0f} texts/s", flush=True)

        env = dict(os.environ, AIFORGE_HOME=str(home), HEAD_DIR=str(head_dir), RAY_AUTH_MODE="disabled",
                   PYTHONPATH=str(BASELINES), BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        servers = []
        port = free_port()
        servers.append(run_server(
            "baseline_a_fastapi_sentence_transformers",
            [sys.executable, "-m", "uvicorn", "fastapi_st:app", "--port", str(port), "--no-access-log",
             "--app-dir", str(BASELINES)],
            port, "/ready", "/predict", "plain", texts, levels, args.duration, env, logdir))
        if not args.skip_bentoml:
            port = free_port()
            bentoml = Path(sys.executable).with_name("bentoml")
            servers.append(run_server(
                "baseline_b_bentoml_adaptive_batching",
                [str(bentoml), "serve", "bento_service:Classifier", "--port", str(port), "--host", "127.0.0.1",
                 "--working-dir", str(BASELINES)],
                port, "/readyz", "/predict", "bentoml", texts, levels, args.duration, env, logdir))
        for precision in ("fp32", "int8"):
            if precision not in graphs:
                print(f"no {precision} graph in the bundle (parity gate): skipped", flush=True)
                continue
            port = free_port()
            servers.append(run_server(
                f"aiforge_{precision}",
                aiforge_server_args([str(exported.path)], port=port, extra=["--precision", precision]),
                port, "/v2/health/ready", "/v2/models/banking77/infer", "v2", texts, levels, args.duration,
                env, logdir))
        short = None
        best = "int8" if "int8" in graphs else "fp32"
        port = free_port()
        with running_server(aiforge_server_args([str(exported.path)], port=port, extra=["--precision", best]),
                            port=port, env=env):
            short = measure(f"http://127.0.0.1:{port}", "/v2/models/banking77/infer", ["what is my balance"],
                            concurrency=1, duration=min(args.duration, 10), protocol="v2")

    by = {s["server"]: s for s in servers}

    def level(server: str, c: int) -> dict[str, Any] | None:
        s = by.get(server)
        return next((r for r in s["levels"] if r["concurrency"] == c), None) if s else None

    ratios: dict[str, Any] = {}
    top = max(levels)
    for name in ("aiforge_int8", "aiforge_fp32"):
        mine = level(name, top)
        if not mine:
            continue
        for base in ("baseline_a_fastapi_sentence_transformers", "baseline_b_bentoml_adaptive_batching"):
            other = level(base, top)
            if other:
                ratios[f"{name}_vs_{base}_throughput_c{top}"] = mine["throughput_rps"] / other["throughput_rps"]
                ratios[f"{name}_vs_{base}_p99_ratio_c{top}"] = mine["p99_ms"] / other["p99_ms"]
    payload = {
        "benchmark": "single-text requests, BANKING77 test sentences, closed loop, loopback",
        "command": f"bench/.venv/bin/python bench/serve.py --duration {args.duration:g} --levels {args.levels}",
        "machine": machine(),
        "duration_s": args.duration,
        "offline_ceiling_texts_per_s": ceiling,
        "short_sentence_c1": short,
        "servers": servers,
        "ratios": ratios,
    }
    print(json.dumps(ratios, indent=2))
    print(f"wrote {write_result('serve', payload)}")


if __name__ == "__main__":
    main()
