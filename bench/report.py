"""Print the benchmark results in bench/results/*.json as Markdown tables (for the README).

    python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    b77 = _load("banking77")
    if b77:
        print("| mode | test accuracy | macro-F1 | training wall time | int8 agreement | target |")
        print("|---|---|---|---|---|---|")
        for r in b77["runs"]:
            p = r["parity"]
            print(f"| {r['mode']} | {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} | {r['train_seconds']:.0f} s | "
                  f"{p.get('int8_top1_agreement', float('nan')):.4f} ({p.get('int8_recipe')}) | "
                  f"{'met' if r['meets_target'] else 'missed'} |")
        print()
    exp = _load("export")
    if exp:
        print("| graph | accuracy | size | single-text latency (median / p95) | vs PyTorch |")
        print("|---|---|---|---|---|")
        for name, m in exp["models"].items():
            lat = m["latency"]
            print(f"| {name} | {m['accuracy']:.4f} | {m['size_bytes'] / 1e6:.1f} MB | {lat['median_ms']:.2f} / "
                  f"{lat['p95_ms']:.2f} ms | x{m['speedup_vs_pytorch']:.2f} faster, "
                  f"{m['size_ratio_vs_pytorch']:.2f} x size |")
        agreement = exp["models"].get("onnx_int8", {}).get("top1_agreement_with_fp32")
        if agreement is not None:
            print(f"\nint8 top-1 agreement with fp32 on the {exp['n_test']} test texts: {agreement:.4f}\n")
    serve = _load("serve")
    if serve:
        print("| server | c=1 p50 / p99 | c=8 req/s | c=64 req/s | c=64 p99 | ready | RSS | torch |")
        print("|---|---|---|---|---|---|---|---|")
        for s in serve["servers"]:
            lv = {r["concurrency"]: r for r in s["levels"]}
            one, eight, top = lv.get(1), lv.get(8), lv.get(64)
            print(f"| {s['server']} | {one['p50_ms']:.1f} / {one['p99_ms']:.1f} ms | {eight['throughput_rps']:.0f} | "
                  f"{top['throughput_rps']:.0f} | {top['p99_ms']:.0f} ms | {s['ready_seconds']:.2f} s | "
                  f"{s['rss_mb_after_load']:.0f} MB | {'yes' if s['torch_imported'] else 'no'} |")
        ceiling = serve["offline_ceiling_texts_per_s"]
        print("\nOffline ceiling (Runtime.predict_proba, no HTTP): "
              + ", ".join(f"{k} {v:.0f} texts/s" for k, v in ceiling.items()))
        for k, v in serve["ratios"].items():
            print(f"- {k}: {v:.2f}")


if __name__ == "__main__":
    main()
