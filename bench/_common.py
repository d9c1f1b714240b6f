"""Shared bits of the benchmark scripts: where the data is, machine facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or ``$AIFORGE_SHARED_DATA``."""
    path = Path(os.environ.get("AIFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not (path / "banking77" / "train.csv").is_file():
        sys.exit(f"BANKING77 not found under {path}; set AIFORGE_SHARED_DATA to the shared data folder.")
    return path


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path
