"""int8 recipes and fused graphs on a BANKING77 text bundle: agreement, size, batch dependence, texts/s, roofline.

    python bench/optimize.py --bundle PATH [--threads 2] [--repeats 3] [--timing-texts 3080]
        [--sweep NAME --sweep-home HOME --sweep-budget 120 [--sweep-data FILE]]...

Compares, on the full BANKING77 test set (3,080 texts) and the bundle's own fp32 graph:
``fp32``; ``int8-per-tensor`` (onnxruntime ``quantize_dynamic`` as aiforge shipped it before: one
activation scale per batch tensor, so an item's output depends on its batch-mates); ``int8-per-row``
(what aiforge ships now: the same weights, one activation scale per token, see
``aiforge/optimize/per_row.py``). For each: top-1 agreement with fp32, accuracy, graph size, the
largest change of an item's probabilities between alone and batched (40 probes x 4 random batches),
and offline texts/s at batch 1, 16 and 64 (texts sorted by length as the Runtime does; best of
``--repeats``). Without ``--bundle`` it fits a head-mode bundle first (minutes).

Also ``fused-fp32`` and ``fused-int8`` (:mod:`aiforge.optimize.fuse`, then the recipe the export
ships: the first of ``RECIPES`` that reaches 99 % agreement on the full test set), ``int8-shipped-before``
(the unfused per-row graph of the previous default recipe, embeddings and down-projections fp32),
and the roofline: this CPU's peak fp32 GEMM (numpy and onnxruntime MatMul, square matrices) and int8
GEMM (onnxruntime MatMulInteger) throughput, the encoder's FLOPs per token at the test set's mean
token length, and the fraction of peak each graph's offline batch-64 rate reaches. ``--sweep``
runs ``aiforge optimize`` (no new version registered) on registered bundles and stores their
Pareto tables. Writes bench/results/optimize.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

import aiforge as af
from _common import RESULTS, machine, shared_data, write_result
from aiforge.bundle.runtime import onnx_session
from aiforge.bundle.tokens import encode_batches, pad_rows
from aiforge.optimize.command import optimize_bundle
from aiforge.optimize.fuse import fuse_transformer
from aiforge.optimize.quantize import RECIPES, quantize_recipe

HIDDEN, FFN, LAYERS, HEADS = 384, 1536, 6, 12  # MiniLM-L6


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def peak_gemm(threads: int, n: int = 1024, seconds: float = 3.0) -> dict[str, float]:
    """Best GFLOP/s (fp32: numpy and onnxruntime MatMul) and GOP/s (int8: MatMulInteger) on n x n x n."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    qa = rng.integers(0, 255, (n, n), dtype=np.uint8)
    qb = rng.integers(-127, 127, (n, n), dtype=np.int8)

    def best(run: Any) -> float:
        run()
        fastest, t_end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            run()
            fastest = min(fastest, time.perf_counter() - t0)
        return 2 * n ** 3 / fastest / 1e9

    def session(op: str, ta: int, tb: int, to: int) -> Any:
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "g",
                                  [helper.make_tensor_value_info("a", ta, [n, n]),
                                   helper.make_tensor_value_info("b", tb, [n, n])],
                                  [helper.make_tensor_value_info("y", to, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    fp32 = session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT)
    int8 = session("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
    del onnx
    return {"n": n, "threads": threads, "numpy_fp32_gflops": best(lambda: a @ b),
            "onnxruntime_fp32_gflops": best(lambda: fp32.run(None, {"a": a, "b": b})),
            "onnxruntime_int8_gops": best(lambda: int8.run(None, {"a": qa, "b": qb}))}


def flops_per_token(tokens: float) -> float:
    """Multiply-adds x 2 of one token through the encoder: Q, K, V and output projections, the FFN, and
    attention scores and mixing against ``tokens`` keys (embeddings, LayerNorm and the head are negligible)."""
    return LAYERS * (8 * HIDDEN * HIDDEN + 4 * HIDDEN * FFN + 4 * tokens * HIDDEN)


def fit_bundle(home: Path) -> Path:
    data = shared_data() / "banking77"
    spec = af.AppSpec.from_dict({
        "name": "banking77", "task": "text-classification",
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                 "text_column": "text", "label_column": "category"},
        "model": {"backbone": "minilm-l6", "mode": "head"}, "train": {"seed": 0}}, source="bench/optimize.py")
    app = af.App(spec, home=home)
    app.fit(progress=True)
    return Path(app.export().path)


def probabilities(session: Any, tok: Tokenizer, texts: list[str], batch: int) -> np.ndarray:
    out = None
    for idx, ids, mask in encode_batches(tok, texts, batch):
        p = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if out is None:
            out = np.zeros((len(texts), p.shape[1]), dtype=np.float32)
        out[idx] = p
    assert out is not None
    return out


def batch_dependence(session: Any, tok: Tokenizer, texts: list[str], *, probes: int = 40) -> float:
    """Largest |p(alone) - p(inside a random padded batch)| over probe texts."""
    rng = random.Random(0)
    seqs = [e.ids for e in tok.encode_batch(texts)]
    worst = 0.0

    def run(rows: list[int]) -> np.ndarray:
        ids, mask = pad_rows(seqs, rows)
        out: np.ndarray = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    for p in rng.sample(range(len(texts)), probes):
        alone = run([p])[0]
        for _ in range(4):
            mates = rng.sample(range(len(texts)), rng.randint(1, 31))
            worst = max(worst, float(np.abs(run([p, *mates])[0] - alone).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="a BANKING77 text bundle folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch1-texts", type=int, default=500, help="texts timed one at a time")
    parser.add_argument("--timing-texts", type=int, default=3080, help="texts timed at batch 16 and 64 (evenly "
                                                                       "spaced over the test set)")
    parser.add_argument("--texts", type=int, default=3080, help="test texts scored (evenly spaced)")
    parser.add_argument("--probes", type=int, default=40, help="texts the batch-dependence check probes")
    parser.add_argument("--fused-recipe", default=None, help="int8 recipe of fused-int8 (default: the first "
                                                             "reaching 99 %% agreement on the texts scored)")
    parser.add_argument("--sweep", action="append", default=[], help="registered bundle to run aiforge optimize on")
    parser.add_argument("--sweep-home", default=None)
    parser.add_argument("--sweep-budget", type=float, default=120.0)
    parser.add_argument("--sweep-parity-limit", type=int, default=2000, help="parity items a sweep scores")
    parser.add_argument("--sweep-data", action="append", default=[], help="NAME=FILE: parity data of a sweep")
    args = parser.parse_args()
    args.sweep_data = dict(item.split("=", 1) for item in args.sweep_data)
    args.sweep_data = {k: Path(v) for k, v in args.sweep_data.items()}
    load_at_start = load_average()
    data = shared_data() / "banking77"
    test = pd.read_csv(data / "test.csv")
    texts, labels = test["text"].tolist(), test["category"].tolist()
    if args.texts < len(texts):  # a loaded machine: an evenly spaced subset (the JSON says how many)
        step = len(texts) / args.texts
        keep = [int(i * step) for i in range(args.texts)]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-optimize-") as tmp:
        bundle = args.bundle or fit_bundle(Path(tmp) / "home")
        pipeline = pd.read_json(bundle / "pipeline.json", typ="series")
        tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=int(pipeline["max_length"]))
        names = list(pipeline["labels"])
        truth = np.array([names.index(y) for y in labels])
        fp32 = bundle / "model.onnx"
        before = next(r for r in RECIPES if r.name == "weights-except-down-projections")
        graphs = {"fp32": fp32, "int8-per-tensor": Path(tmp) / "per_tensor.onnx",
                  "int8-shipped-before": Path(tmp) / "per_row.onnx", "fused-fp32": Path(tmp) / "fused.onnx"}
        quantize_recipe(fp32, graphs["int8-per-tensor"], before, per_row=False)
        quantize_recipe(fp32, graphs["int8-shipped-before"], before)
        fused = fuse_transformer(fp32, graphs["fused-fp32"], num_heads=HEADS)
        print("fused", fused, flush=True)
        lengths = np.array([len(e.ids) for e in tok.encode_batch(texts)])
        timed = texts[::max(1, len(texts) // args.timing_texts)][:args.timing_texts]
        rows: dict[str, Any] = {}
        ref = None
        shipped: dict[str, Any] = {}
        for name, path in [*graphs.items(), ("fused-int8", Path(tmp) / "fused_int8.onnx")]:
            if name == "fused-int8":  # the export's choice: the first recipe reaching 99 % on the full test set
                for recipe in [r for r in RECIPES if args.fused_recipe in (None, r.name)]:
                    quantize_recipe(graphs["fused-fp32"], path, recipe)
                    agree = float((probabilities(onnx_session(path, threads=args.threads), tok, texts, 64)
                                   .argmax(1) == ref.argmax(1)).mean())
                    shipped.setdefault("tries", []).append({"recipe": recipe.name, "top1_agreement": agree,
                                                            "size_mb": path.stat().st_size / 1e6})
                    if agree >= 0.99:
                        shipped["recipe"] = recipe.name
                        break
            session = onnx_session(path, threads=args.threads)
            probs = probabilities(session, tok, texts, 64)
            ref = probs if ref is None else ref
            speed = {}
            for batch in (1, 16, 64):
                sample = timed if batch > 1 else texts[:args.batch1_texts]
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    probabilities(session, tok, sample, batch)
                    best = min(best, time.perf_counter() - t0)
                speed[f"batch_{batch}"] = len(sample) / best
            rows[name] = {
                "size_mb": path.stat().st_size / 1e6,
                "top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                "accuracy": float((probs.argmax(1) == truth).mean()),
                "max_abs_prob_diff_vs_fp32": float(np.abs(probs - ref).max()),
                "max_abs_prob_change_alone_vs_batched": batch_dependence(session, tok, texts, probes=args.probes),
                "offline_texts_per_s": speed,
                "load_average_after": load_average(),
            }
            print(name, rows[name], flush=True)
        roof = peak_gemm(args.threads or 2)
        print("roofline", roof, flush=True)
        mean_tokens = float(lengths.mean())
        per_token = flops_per_token(mean_tokens)
        for name, row in rows.items():
            rate = row["offline_texts_per_s"]["batch_64"] * mean_tokens * per_token / 1e9
            peak = roof["onnxruntime_int8_gops"] if "int8" in name else max(roof["numpy_fp32_gflops"],
                                                                            roof["onnxruntime_fp32_gflops"])
            row["roofline"] = {"useful_gflops_per_s_batch_64": rate, "fraction_of_peak_batch_64": rate / peak,
                               "peak_used": "onnxruntime_int8_gops" if "int8" in name else "best fp32 GEMM"}
        sweeps = {}
        for name in args.sweep:
            result = optimize_bundle(name, home=args.sweep_home, budget_s=args.sweep_budget, register=False,
                                     data=args.sweep_data.get(name), progress=True,
                                     parity_limit=args.sweep_parity_limit,
                                     out=Path(tmp) / f"sweep-{name}")
            sweeps[name] = {"rows": result.rows, "elapsed_s": result.elapsed_s, "stopped_early": result.stopped_early,
                            "min_agreement": result.min_agreement, "chosen": result.chosen,
                            "load_average_after": load_average()}
    old, new = rows["int8-per-tensor"], rows["int8-shipped-before"]
    fast = rows["fused-int8"]
    payload = {
        "benchmark": "int8 recipes on the BANKING77 test set (3,080 texts): agreement, size, batch dependence, "
                     "offline texts/s",
        "command": "python bench/optimize.py --bundle PATH" + "".join(
            f" --{flag.replace('_', '-')} {getattr(args, flag)}" for flag in
            ("threads", "repeats", "batch1_texts", "timing_texts", "texts", "probes")
            if getattr(args, flag) != parser.get_default(flag)),
        "machine": {**machine(), "load_average_at_start": load_at_start, "load_average_at_end": load_average()},
        "threads": args.threads,
        "texts_scored": len(texts),
        "timing_texts": len(timed),
        "mean_tokens_per_text": mean_tokens,
        "flops_per_token": per_token,
        "roofline": roof,
        "fused": fused.to_dict(),
        "fused_int8_recipe": shipped,
        "graphs": rows,
        "ratios": {**{f"per_row_vs_per_tensor_texts_per_s_{k}": new["offline_texts_per_s"][k] /
                      old["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   **{f"fused_int8_vs_int8_shipped_before_{k}": fast["offline_texts_per_s"][k] /
                      new["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   **{f"fused_int8_vs_fp32_{k}": fast["offline_texts_per_s"][k] /
                      rows["fp32"]["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   "fused_int8_size_vs_int8_shipped_before": fast["size_mb"] / new["size_mb"]},
        # sweeps not rerun in this run keep their earlier tables (each records its own command and load)
        "optimize_sweeps": {**_earlier_sweeps(), **sweeps},
    }
    print(payload["ratios"])
    print(f"wrote {write_result('optimize', payload)}")


def _earlier_sweeps() -> dict[str, Any]:
    path = RESULTS / "optimize.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text()).get("optimize_sweeps", {})
    return earlier if isinstance(earlier, dict) else {}


if __name__ == "__main__":
    main()
