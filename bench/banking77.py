"""BANKING77 intent detection: test accuracy and training wall time, `head` and `full` modes.

    python bench/banking77.py [--modes head,full]

Trains through the public API (App.fit + App.export) on the official train/test split,
with the validation set split off train (10%, stratified, seed 0), and writes
bench/results/banking77.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import aiforge as af
from _common import machine, shared_data, write_result

TARGETS = {"head": {"accuracy": 0.90, "train_seconds": 300}, "full": {"accuracy": 0.93}}


def run(mode: str, home: str) -> dict[str, Any]:
    data = shared_data() / "banking77"
    spec = af.AppSpec.from_dict({
        "name": f"banking77-{mode}", "task": "text-classification",
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                 "text_column": "text", "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": mode},
        "train": {"seed": 0},
    }, source="bench/banking77.py")
    app = af.App(spec, home=home)
    start = time.perf_counter()
    result = app.fit(progress=True)
    fit_wall = time.perf_counter() - start
    exported = app.export()
    test = result.test
    assert test is not None
    row = {
        "mode": mode,
        "test_accuracy": test.accuracy,
        "test_macro_f1": test.macro_f1,
        "test_top5_accuracy": test.top5_accuracy,
        "validation_accuracy": result.validation.accuracy,
        "train_seconds": result.train_seconds,
        "fit_wall_seconds_incl_data_and_load": fit_wall,
        "export_seconds": time.perf_counter() - start - fit_wall,
        "n_train": len(result.splits.train),
        "n_validation": len(result.splits.validation),
        "n_test": test.n,
        "epochs": result.history,
        "parity": exported.parity.to_dict(),
        "target": TARGETS[mode],
    }
    row["meets_target"] = test.accuracy >= TARGETS[mode]["accuracy"] and (
        mode != "head" or result.train_seconds < TARGETS["head"]["train_seconds"])
    print(f"{mode}: test accuracy {test.accuracy:.4f}, macro-F1 {test.macro_f1:.4f}, "
          f"trained in {result.train_seconds:.0f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="head,full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-") as home:
        runs = [run(mode, home) for mode in args.modes.split(",")]
    path = write_result("banking77", {
        "benchmark": "BANKING77 test accuracy and training wall time",
        "command": f"python bench/banking77.py --modes {args.modes}",
        "published": {"fine_tuned_bert": 0.937, "best_reported": 0.949},
        "machine": machine(),
        "runs": runs,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
