"""int8 vs fp32 ONNX vs the original PyTorch model on BANKING77, in one run.

    python bench/export.py [--calls 200]

Fits a `head`-mode BANKING77 classifier (the PyTorch model), exports it (fp32 + int8 ONNX),
then measures on the official test set: accuracy of each, int8/fp32 top-1 agreement, file
sizes, and single-text latency (median and p95 over --calls calls, one text per call,
cycling through test sentences) for PyTorch, the fp32 Runtime and the int8 Runtime.
Writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import aiforge as af
from _common import machine, shared_data, write_result


def latency(fn: Callable[[list[str]], Any], texts: list[str], calls: int) -> dict[str, float]:
    for t in texts[:20]:  # warm-up
        fn([t])
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn([texts[i % len(texts)]])
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95)),
            "mean_ms": statistics.fmean(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    data = shared_data() / "banking77"
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as home:
        spec = af.AppSpec.from_dict({
            "name": "banking77-export", "task": "text-classification",
            "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                     "text_column": "text", "label_column": "category"},
            "model": {"backbone": "minilm-l6", "mode": "head"},
            "optimize": {"parity_samples": 4000},
        }, source="bench/export.py")
        app = af.App(spec, home=home)
        result = app.fit(progress=True)
        exported = app.export()
        assert result.test is not None
        fitted, test = result.fitted, result.splits.test
        assert test is not None
        texts, labels = test.texts, test.labels
        bundle = Path(exported.path)
        rt32 = af.load(bundle, precision="fp32")
        has_int8 = "int8" in rt32.pipeline["graphs"]
        rt8 = af.load(bundle, precision="int8") if has_int8 else None

        index = {y: i for i, y in enumerate(fitted.labels)}
        truth = np.array([index[y] for y in labels])
        p_torch = fitted.predict_proba(texts)
        p32 = rt32.predict_proba(texts)
        models: dict[str, dict[str, Any]] = {
            "pytorch": {"accuracy": float((p_torch.argmax(1) == truth).mean()),
                        "size_bytes": sum(t.numel() * t.element_size() for t in fitted.model.state_dict().values())},
            "onnx_fp32": {"accuracy": float((p32.argmax(1) == truth).mean()),
                          "size_bytes": (bundle / "model.onnx").stat().st_size,
                          "max_abs_prob_diff_vs_pytorch": float(np.abs(p32 - p_torch).max())},
        }
        if rt8 is not None:
            p8 = rt8.predict_proba(texts)
            models["onnx_int8"] = {"accuracy": float((p8.argmax(1) == truth).mean()),
                                   "size_bytes": (bundle / "model.int8.onnx").stat().st_size,
                                   "top1_agreement_with_fp32": float((p8.argmax(1) == p32.argmax(1)).mean())}
        torch.set_num_threads(2)
        models["pytorch"]["latency"] = latency(fitted.predict_proba, texts, args.calls)
        models["onnx_fp32"]["latency"] = latency(rt32.predict_proba, texts, args.calls)
        if rt8 is not None:
            models["onnx_int8"]["latency"] = latency(rt8.predict_proba, texts, args.calls)
    base = models["pytorch"]["latency"]["median_ms"]
    for m in models.values():
        m["speedup_vs_pytorch"] = base / m["latency"]["median_ms"]
        m["size_ratio_vs_pytorch"] = m["size_bytes"] / models["pytorch"]["size_bytes"]
    for name, m in models.items():
        print(f"{name:10s} acc {m['accuracy']:.4f}  size {m['size_bytes'] / 1e6:6.1f} MB  "
              f"median {m['latency']['median_ms']:.2f} ms  x{m['speedup_vs_pytorch']:.2f}")
    path = write_result("export", {
        "benchmark": "int8 vs fp32 ONNX vs PyTorch on BANKING77 test (3,080 texts)",
        "command": f"python bench/export.py --calls {args.calls}",
        "machine": machine(),
        "n_test": len(texts),
        "latency_calls": args.calls,
        "parity_in_manifest": exported.parity.to_dict(),
        "models": models,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
