"""Every kind's model against its simple baselines on its example data: the interval of the difference and
the wall time the baselines add to the fit (target: <= 10 %).

    nice python bench/model_baselines.py            # writes bench/results/baselines.json
    nice python bench/model_baselines.py --only banking77 fashion   # re-measures those rows, keeps the others

Each row records the command, the date, the model's test metric, the best baseline (chosen on
validation), the difference with its 95 % paired bootstrap interval, whether it warns, and the
baselines' wall time over the fit's (``baseline_share_of_fit``; target <= 0.10).

(Named model_baselines.py because bench/baselines/ holds the serving baselines.) Each app is fitted
once in this process (no export); the numbers are ``fit.baseline`` as ``aiforge train`` reports it.
Fashion-MNIST is a seeded per-class sample (see ``FASHION``) so the run stays within minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from _common import RESULTS, ROOT, machine, shared_data, write_result
from aiforge import App
from aiforge.spec import BaseSpec
from aiforge.tasks.image.samples import write_digits_folder

FASHION = {"max_per_class": 1000, "max_test_per_class": 300}


def _example(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name / "aiforge.yaml").read_text())
    return raw


def specs(tmp: Path) -> dict[str, tuple[dict[str, Any], Path]]:
    """The apps measured: (spec mapping, folder its relative paths resolve against)."""
    data = shared_data()
    banking = {**_example("banking77"), "data": {**_example("banking77")["data"],
                                                  "train": str(data / "banking77" / "train.csv"),
                                                  "test": str(data / "banking77" / "test.csv")}}
    fashion = _example("fashion-mnist")
    fashion["data"] = {**fashion["data"], **FASHION}
    digits = write_digits_folder(tmp / "digits")
    return {
        "adult (tabular)": (_example("adult-income"), ROOT / "examples" / "adult-income"),
        "digits image folder (image, head, 64 px)": (
            {"name": "digits", "task": "image-classification",
             "data": {"train": str(digits / "train"), "test": str(digits / "test")},
             "model": {"mode": "head", "resolution": 64}, "train": {"seed": 0}}, tmp),
        "docs-assistant intents (chat)": (_example("docs-assistant"), ROOT / "examples" / "docs-assistant"),
        "movielens (recommendation)": (_example("movielens"), ROOT / "examples" / "movielens"),
        "banking77 (text, head)": (banking, ROOT / "examples" / "banking77"),
        "fashion-mnist (image, head, 64 px, sampled)": (fashion, ROOT / "examples" / "fashion-mnist"),
    }


def run(label: str, raw: dict[str, Any], base: Path, home: Path) -> dict[str, Any]:
    spec = BaseSpec.from_dict(raw, base_dir=base)
    start = time.perf_counter()
    fit = App(spec, home=home).fit(progress=False)
    wall = time.perf_counter() - start
    b = fit.baseline.to_dict()
    print(f"{label}: model {b['model']['test']} vs {b['best']} {b['baseline']['test']}, diff {b['difference']} "
          f"CI {b['interval']}; baselines {b['seconds']:.1f} s of fit {b['fit_seconds']:.1f} s", flush=True)
    return {"app": label, "task": spec.task, "command": " ".join(["python", *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "wall_seconds": wall,
            "model_test": b["model"]["test"], "best_baseline": b["best"], "baseline_test": b["baseline"]["test"],
            "difference": b["difference"], "interval": b["interval"], "warns": bool(b["warning"]), "baseline": b,
            "baseline_share_of_fit": b["seconds"] / b["fit_seconds"] if b["fit_seconds"] else None,
            "meets_time_target": bool(b["fit_seconds"]) and b["seconds"] <= 0.10 * b["fit_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="substrings of the app labels to run (the others' results are kept)")
    args = parser.parse_args()
    previous = RESULTS / "baselines.json"
    done: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (raw, base) in specs(Path(tmp)).items():
            if args.only and not any(s in label for s in args.only):
                continue
            done.append(run(label, raw, base, Path(tmp) / "home"))
            # a partial run (--only) updates its apps and keeps the others' (re-read before each write, so
            # two partial runs of different apps both land)
            kept = json.loads(previous.read_text())["runs"] if args.only and previous.is_file() else []
            ours = {r["app"] for r in done}
            runs = [r for r in kept if r["app"] not in ours] + done
            path = write_result("baselines", {"machine": machine(), "fashion_mnist_sample": FASHION, "runs": runs})
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
