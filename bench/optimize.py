"""int8 recipes on a BANKING77 text bundle: agreement with fp32, size, batch dependence, offline texts/s.

    python bench/optimize.py --bundle PATH [--threads 2] [--repeats 3]

Compares, on the full BANKING77 test set (3,080 texts) and the bundle's own fp32 graph:
``fp32``; ``int8-per-tensor`` (onnxruntime ``quantize_dynamic`` as aiforge shipped it before: one
activation scale per batch tensor, so an item's output depends on its batch-mates); ``int8-per-row``
(what aiforge ships now: the same weights, one activation scale per token, see
``aiforge/optimize/per_row.py``). For each: top-1 agreement with fp32, accuracy, graph size, the
largest change of an item's probabilities between alone and batched (40 probes x 4 random batches),
and offline texts/s at batch 1, 16 and 64 (texts sorted by length as the Runtime does; best of
``--repeats``). Without ``--bundle`` it fits a head-mode bundle first (minutes). Writes
bench/results/optimize.json.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

import aiforge as af
from _common import machine, shared_data, write_result
from aiforge.bundle.runtime import onnx_session
from aiforge.bundle.tokens import encode_batches, pad_rows
from aiforge.optimize.quantize import RECIPES, quantize_recipe


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
    args = parser.parse_args()
    data = shared_data() / "banking77"
    test = pd.read_csv(data / "test.csv")
    texts, labels = test["text"].tolist(), test["category"].tolist()
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-optimize-") as tmp:
        bundle = args.bundle or fit_bundle(Path(tmp) / "home")
        pipeline = pd.read_json(bundle / "pipeline.json", typ="series")
        tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=int(pipeline["max_length"]))
        names = list(pipeline["labels"])
        truth = np.array([names.index(y) for y in labels])
        fp32 = bundle / "model.onnx"
        graphs = {"fp32": fp32, "int8-per-tensor": Path(tmp) / "per_tensor.onnx",
                  "int8-per-row": Path(tmp) / "per_row.onnx"}
        recipe = RECIPES[0]  # the first recipe: the one BANKING77's int8 graph passes with
        quantize_recipe(fp32, graphs["int8-per-tensor"], recipe, per_row=False)
        quantize_recipe(fp32, graphs["int8-per-row"], recipe)
        rows: dict[str, Any] = {}
        ref = None
        for name, path in graphs.items():
            session = onnx_session(path, threads=args.threads)
            probs = probabilities(session, tok, texts, 64)
            ref = probs if ref is None else ref
            speed = {}
            for batch in (1, 16, 64):
                sample = texts if batch > 1 else texts[:args.batch1_texts]
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
                "max_abs_prob_change_alone_vs_batched": batch_dependence(session, tok, texts),
                "offline_texts_per_s": speed,
            }
            print(name, rows[name], flush=True)
    old, new = rows["int8-per-tensor"], rows["int8-per-row"]
    payload = {
        "benchmark": "int8 recipes on the BANKING77 test set (3,080 texts): agreement, size, batch dependence, "
                     "offline texts/s",
        "command": "python bench/optimize.py --bundle PATH",
        "machine": machine(),
        "threads": args.threads,
        "graphs": rows,
        "ratios": {f"per_row_vs_per_tensor_texts_per_s_{k}": new["offline_texts_per_s"][k] /
                   old["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
    }
    print(payload["ratios"])
    print(f"wrote {write_result('optimize', payload)}")


if __name__ == "__main__":
    main()
