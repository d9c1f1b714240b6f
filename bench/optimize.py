"""int8 recipes and fused graphs on a BANKING77 text bundle: agreement, size, batch dependence, texts/s, roofline.

    python bench/optimize.py --bundle PATH [--threads 2] [--repeats 3] [--timing-texts 3080]
        [--sweep NAME --sweep-home HOME --sweep-budget 120 [--sweep-data FILE]]...
    python bench/optimize.py --candidates --bundle PATH [--candidate NAME]...   (MatMulNBits graphs, paired)
    python bench/optimize.py --experiments --bundle PATH                       (batch-64 profile, variants)
    python bench/optimize.py --runtime --bundle PATH       (the offline runtime: batches run concurrently, paired)
    python bench/optimize.py --graphs-g18 --bundle PATH    (compact quantizers, SmoothQuant down-projections, paired)
    python bench/optimize.py --cpu-portability --bundle PATH  (int8 sums exact or saturating on this CPU)
    python bench/optimize.py --ceiling --bundle PATH       (this CPU's texts/s ceiling against the offline runtime)

Compares, on the full BANKING77 test set (3,080 texts) and the bundle's own fp32 graph:
``fp32``; ``int8-per-tensor`` (onnxruntime ``quantize_dynamic`` as aiforge shipped it before: one
activation scale per batch tensor, so an item's output depends on its batch-mates); ``int8-per-row``
(what aiforge ships now: the same weights, one activation scale per token, see
``aiforge/optimize/per_row.py``). For each: top-1 agreement with fp32, accuracy, graph size, the
largest change of an item's probabilities between alone and batched (40 probes x 4 random batches),
and offline texts/s at batch 1, 16 and 64 (texts sorted by length as the Runtime does; best of
``--repeats``). Without ``--bundle`` it fits a head-mode bundle first (minutes).

Also ``fused-fp32`` and ``fused-int8`` (:mod:`aiforge.optimize.fuse`, then the recipe the export
ships: the first of ``RECIPES`` that reaches 99 % agreement on the full test set),
``fused-int8-shipped-before`` (the fused recipe shipped before the MatMulNBits down-projections: per-row
int8, down-projections fp32; timed against ``fused-int8`` in alternating pairs, ``paired_vs_shipped_before``),
``int8-unfused-per-row`` (the unfused per-row graph of an older default, embeddings and down-projections fp32),
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
from aiforge.bundle.runtime import available_cpus, onnx_session, run_concurrently
from aiforge.bundle.tokens import encode_batches, length_groups, pad_rows
from aiforge.optimize.command import optimize_bundle
from aiforge.optimize.fuse import fuse_transformer
from aiforge.optimize.quantize import RECIPES, STATIC_RECIPES, quantize_recipe

HIDDEN, FFN, LAYERS, HEADS = 384, 1536, 6, 12  # MiniLM-L6
SHIPPED_BEFORE = "embeddings+weights-except-down-projections"  # the fused int8 recipe shipped before


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


def _session(path: Path, threads: int, config: dict[str, str] | None = None, profile: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile_run(path: Path, tok: Tokenizer, texts: list[str], *, threads: int, batch: int,
                work: Path) -> dict[str, Any]:
    """Where one offline pass at ``batch`` spends its time: tokenization, padding, the Python between
    calls, onnxruntime's own overhead per run, and each op type's kernel time (onnxruntime's profiler)."""
    session = _session(path, threads, profile=str(work / "profile"))
    probabilities(session, tok, texts[:batch], batch)  # warm-up (its events are dropped below)
    t0 = time.perf_counter()
    a = time.perf_counter()
    seqs = [e.ids for e in tok.encode_batch(texts)]
    tokenize = time.perf_counter() - a
    groups = length_groups(np.array([len(x) for x in seqs]), batch)
    pad = run = 0.0
    padded = real = 0
    for idx in groups:
        a = time.perf_counter()
        ids, mask = pad_rows(seqs, idx)
        b = time.perf_counter()
        session.run(None, {"input_ids": ids, "attention_mask": mask})
        run += time.perf_counter() - b
        pad += b - a
        padded, real = padded + ids.size, real + int(mask.sum())
    wall = time.perf_counter() - t0
    trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("name") == "model_run"]
    first_timed = runs[1]["ts"] if len(runs) > 1 else 0  # the first model_run is the warm-up's
    ops: dict[str, float] = {}
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
            op = e["args"]["op_name"]
            ops[op] = ops.get(op, 0.0) + e["dur"] / 1e6
    kernels = sum(ops.values())
    return {"graph": path.name, "batch": batch, "threads": threads, "texts": len(texts), "batches": len(groups),
            "wall_s": wall, "texts_per_s": len(texts) / wall,
            "split_s": {"tokenize": tokenize, "pad": pad, "onnxruntime_kernels": kernels,
                        "onnxruntime_overhead": run - kernels, "python_between_calls": wall - tokenize - pad - run},
            "padding_fraction_of_tokens": 1 - real / padded,
            "op_types_s": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            "op_types_fraction_of_kernels": {k: v / kernels for k, v in sorted(ops.items(), key=lambda kv: -kv[1])}}


def _timed(run: Any, texts: list[str], repeats: int) -> float:
    run(texts[:64])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(texts)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def _grouped(session: Any, tok: Tokenizer, texts: list[str], batch: int, ratio: float, slack: int) -> None:
    seqs = [e.ids for e in tok.encode_batch(texts)]
    for idx in length_groups(np.array([len(x) for x in seqs]), batch, ratio=ratio, slack=slack):
        ids, mask = pad_rows(seqs, idx)
        session.run(None, {"input_ids": ids, "attention_mask": mask})


def _halves(sessions: list[Any], pool: Any, tok: Tokenizer, texts: list[str], batch: int) -> None:
    """Each batch split in two, each half on its own 1-thread session, in parallel (inter-op parallelism)."""
    seqs = [e.ids for e in tok.encode_batch(texts)]
    for idx in length_groups(np.array([len(x) for x in seqs]), batch):
        parts = [idx[: len(idx) // 2], idx[len(idx) // 2:]] if len(idx) > 1 else [idx]
        feeds = [dict(zip(("input_ids", "attention_mask"), pad_rows(seqs, part), strict=True)) for part in parts]
        list(pool.map(lambda sf: sf[0].run(None, sf[1]), zip(sessions, feeds, strict=False)))


def _io_bound(session: Any, tok: Tokenizer, texts: list[str], batch: int) -> None:
    """The same batches through an IOBinding with a preallocated output buffer per batch shape."""
    seqs = [e.ids for e in tok.encode_batch(texts)]
    out_name = session.get_outputs()[0].name
    classes = None
    for idx in length_groups(np.array([len(x) for x in seqs]), batch):
        ids, mask = pad_rows(seqs, idx)
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if classes is None:
            classes = session.run([out_name], {"input_ids": ids[:1], "attention_mask": mask[:1]})[0].shape[1]
        out = np.empty((len(idx), classes), dtype=np.float32)
        binding.bind_output(out_name, "cpu", element_type=np.float32, shape=out.shape, buffer_ptr=out.ctypes.data)
        session.run_with_iobinding(binding)


def experiments(graph: Path, fused: Path, tok: Tokenizer, texts: list[str], timed: list[str], ref: np.ndarray, *,
                threads: int, repeats: int, calibration: list[str], work: Path) -> dict[str, Any]:
    """What the batch-64 profile points at, each measured in this run against ``graph`` (today's int8)."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, Any] = {"baseline_graph": "fused-int8 (the recipe the export ships, per-row scales)",
                           "method": "each variant timed right after a baseline pass, alternating, --repeats "
                                     "pairs; ratio = median of variant/baseline over the pairs (the load moves)",
                           "load_average_at_start": load_average()}
    base = _session(graph, threads)

    def paired(run: Any) -> dict[str, float]:
        ratios, rates, bases = [], [], []
        for _ in range(repeats):
            b = _timed(lambda t: probabilities(base, tok, t, 64), timed, 1)
            v = _timed(run, timed, 1)
            ratios.append(v / b)
            rates.append(v)
            bases.append(b)
        return {"texts_per_s": max(rates), "baseline_texts_per_s": max(bases),
                "vs_baseline": float(np.median(ratios))}

    rows: dict[str, Any] = {}
    for batch in (128, 256):
        rows[f"batch_{batch}"] = paired(lambda t, b=batch: probabilities(base, tok, t, b))
    spin = _session(graph, threads, {"session.intra_op.allow_spinning": "0"})
    rows["allow_spinning_off"] = paired(lambda t: probabilities(spin, tok, t, 64))
    singles = [_session(graph, 1), _session(graph, 1)]
    with ThreadPoolExecutor(2) as pool:
        rows["two_1_thread_sessions_on_halves"] = paired(lambda t: _halves(singles, pool, tok, t, 64))
    for name, ratio, slack in (("bucket_exact_length", 1.0, 0), ("bucket_ratio_1.5_slack_4", 1.5, 4),
                               ("bucket_none_sorted_chunks", 1e9, 10 ** 6)):
        rows[name] = paired(lambda t, r=ratio, s=slack: _grouped(base, tok, t, 64, r, s))
    rows["io_binding_preallocated_output"] = paired(lambda t: _io_bound(base, tok, t, 64))
    out["variants"] = rows
    # static QDQ: calibrated activation scales (batch-independent by construction, no run-time quantizers)
    seqs = [e.ids for e in tok.encode_batch(calibration)]
    width = max(len(x) for x in seqs)
    static: dict[str, Any] = {"calibration_texts": len(calibration), "calibration_width": width}
    for recipe in STATIC_RECIPES:
        path = work / f"{recipe.name}.onnx"
        feeds = [dict(zip(("input_ids", "attention_mask"), pad_rows([s + [0] * (width - len(s)) for s in seqs],
                                                                   list(range(i, i + 16))), strict=True))
                 for i in range(0, len(seqs) // 16 * 16, 16)]
        for f in feeds:  # the mask marks the real tokens only (pad_rows saw full-width rows)
            f["attention_mask"] = (f["input_ids"] != 0).astype(np.int64)
        t0 = time.perf_counter()
        quantize_recipe(fused, path, recipe, calibration=feeds)
        seconds = time.perf_counter() - t0
        session = _session(path, threads)
        probs = probabilities(session, tok, texts, 64)
        static[recipe.name] = {"top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                               "size_mb": path.stat().st_size / 1e6, "quantize_s": seconds,
                               **paired(lambda t, s=session: probabilities(s, tok, t, 64)),
                               "max_abs_prob_change_alone_vs_batched": batch_dependence(session, tok, texts,
                                                                                        probes=10)}
    out["static_qdq"] = static
    out["load_average_at_end"] = load_average()
    return out


# MatMulNBits candidates (weight-only blocks, accuracy_level 4: int8 activations per row and block inside the
# kernel): name -> (bits, block size, which MatMuls). "all": every constant-weight MatMul of the fused graph
# (embeddings fp32); "down": only the FFN down-projections, the rest as the per-row recipe before them.
NBITS_CANDIDATES: dict[str, tuple[int, int, str]] = {
    "nbits8-all-block32": (8, 32, "all"), "nbits8-all-block64": (8, 64, "all"),
    "nbits8-all-block128": (8, 128, "all"), "nbits8-down-block32": (8, 32, "down"),
    "nbits8-down-block64": (8, 64, "down"), "nbits4-down-block32": (4, 32, "down"),
}


def _nbits_graph(fused: Path, before: Path, out: Path, bits: int, block: int, scope: str) -> None:
    import onnx

    from aiforge.optimize.weight_only import weight_only_matmuls

    src = onnx.load(str(fused if scope == "all" else before))
    weights = {i.name: tuple(i.dims) for i in src.graph.initializer}
    nodes = None if scope == "all" else [n.name for n in src.graph.node if n.op_type == "MatMul" and any(
        len(weights.get(i, ())) == 2 and weights[i][0] > weights[i][1] for i in n.input)]
    onnx.save(weight_only_matmuls(src, bits=bits, block_size=block, nodes=nodes), str(out))


def _paired(base: Any, variant: Any, tok: Tokenizer, timed: list[str], pairs: int, batch: int = 64) -> dict[str, Any]:
    """``pairs`` alternating passes of ``base`` then ``variant`` at ``batch``; median of the pair ratios."""
    ratios, rates, bases = [], [], []
    for _ in range(pairs):
        b = _timed(lambda t: probabilities(base, tok, t, batch), timed, 1)
        v = _timed(lambda t: probabilities(variant, tok, t, batch), timed, 1)
        ratios.append(v / b)
        rates.append(v)
        bases.append(b)
    return {"texts_per_s": rates, "baseline_texts_per_s": bases, "vs_baseline": float(np.median(ratios))}


def _tokenizer_and_timed(bundle: Path, texts: list[str], timing_texts: int) -> tuple[Tokenizer, list[str]]:
    """The bundle's tokenizer (no padding, its truncation) and the evenly spaced texts that are timed."""
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=int(json.loads((bundle / "pipeline.json").read_text())["max_length"]))
    return tok, texts[::max(1, len(texts) // timing_texts)][:timing_texts]


def _candidates_only(args: argparse.Namespace, texts: list[str]) -> None:
    """``--candidates``: each MatMulNBits graph against the shipped-before recipe (paired), written into the JSON."""
    load_at_start = load_average()
    bundle = args.bundle
    tok, timed = _tokenizer_and_timed(bundle, texts, args.timing_texts)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-optimize-") as tmp:
        work = Path(tmp)
        fused, before = work / "fused.onnx", work / "before.onnx"
        fuse_transformer(bundle / "model.onnx", fused, num_heads=HEADS)
        quantize_recipe(fused, before, next(r for r in RECIPES if r.name == SHIPPED_BEFORE))
        ref = probabilities(_session(fused, args.threads), tok, texts, 64)
        base = _session(before, args.threads)
        for name in args.candidate or list(NBITS_CANDIDATES):
            bits, block, scope = NBITS_CANDIDATES[name]
            path = work / f"{name}.onnx"
            _nbits_graph(fused, before, path, bits, block, scope)
            session = _session(path, args.threads)
            probs = probabilities(session, tok, texts, 64)
            rows[name] = {"bits": bits, "block_size": block, "matmuls": scope, "size_mb": path.stat().st_size / 1e6,
                          "top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                          "max_abs_prob_diff_vs_fp32": float(np.abs(probs - ref).max()),
                          "max_abs_prob_change_alone_vs_batched": batch_dependence(session, tok, texts,
                                                                                   probes=args.probes),
                          **_paired(base, session, tok, timed, args.repeats), "load_average_after": load_average()}
            print(name, json.dumps(rows[name]), flush=True)
    payload = _earlier()
    payload["matmulnbits_candidates"] = {
        "baseline": f"fused graph, recipe {SHIPPED_BEFORE} (per-row int8, down-projections fp32)",
        "method": "agreement and batch dependence on all test texts; speed: --repeats alternating pairs at batch 64, "
                  "2 threads, ratio = median of candidate/baseline",
        "command": f"python bench/optimize.py --candidates --bundle PATH --threads {args.threads} "
                   f"--timing-texts {args.timing_texts} --repeats {args.repeats} --probes {args.probes}",
        "timing_texts": len(timed), "load_average_at_start": load_at_start, "load_average_at_end": load_average(),
        "rows": rows}
    print(f"wrote {write_result('optimize', payload)}")


def _experiments_only(args: argparse.Namespace, texts: list[str]) -> None:
    """``--experiments``: the batch-64 profile and the experiments, written into the existing JSON."""
    load_at_start = load_average()
    bundle = args.bundle
    tok, timed = _tokenizer_and_timed(bundle, texts, args.timing_texts)
    train = pd.read_csv(shared_data() / "banking77" / "train.csv")["text"].tolist()
    calibration = [train[i] for i in np.random.default_rng(0).choice(len(train), 256, replace=False)]
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-optimize-") as tmp:
        work = Path(tmp)
        fused = work / "fused.onnx"
        fuse_transformer(bundle / "model.onnx", fused, num_heads=HEADS)
        graph = work / "fused_int8.onnx"
        quantize_recipe(fused, graph, next(r for r in RECIPES if r.name == args.fused_recipe))
        ref = probabilities(_session(fused, args.threads), tok, texts, 64)
        prof = profile_run(graph, tok, timed, threads=args.threads, batch=64, work=work)
        print("profile", json.dumps(prof, indent=1), flush=True)
        if args.profile_only:
            payload = _earlier()
            payload.setdefault("profile_batch_64_by_recipe", {})[args.fused_recipe] = {
                **prof, "load_average_at_start": load_at_start, "load_average_at_end": load_average(),
                "command": f"python bench/optimize.py --experiments --profile-only --bundle PATH --fused-recipe "
                           f"{args.fused_recipe} --threads {args.threads} --timing-texts {args.timing_texts}"}
            print(f"wrote {write_result('optimize', payload)}")
            return
        exp = experiments(graph, fused, tok, texts, timed, ref, threads=args.threads, repeats=args.repeats,
                          calibration=calibration, work=work)
        print("experiments", json.dumps(exp, indent=1), flush=True)
    payload = _earlier()
    payload["profile_batch_64"] = {**prof, "recipe": args.fused_recipe, "load_average_at_start": load_at_start,
                                   "load_average_at_end": load_average(),
                                   "command": "python bench/optimize.py --experiments --bundle PATH "
                                              f"--threads {args.threads} --timing-texts {args.timing_texts} "
                                              f"--repeats {args.repeats}"}
    payload["experiments"] = exp
    print(f"wrote {write_result('optimize', payload)}")


# --- --runtime: the offline runtime (batches run concurrently on one session) -------------------------------------

def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (``VmHWM``: its peak; ru_maxrss would carry the parent's over exec) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _concurrent(sessions: list[Any], tok: Tokenizer, texts: list[str], batch: int, *, workers: int = 2,
                ratio: float = 1.2, slack: int = 2, latencies: list[float] | None = None) -> np.ndarray:
    """Length-sorted batches run ``workers`` at a time (``run_concurrently``); worker w on ``sessions[w % n]``."""
    seqs = [e.ids for e in tok.encode_batch(texts)]
    feeds = [(idx, *pad_rows(seqs, idx)) for idx in
             length_groups(np.array([len(x) for x in seqs]), batch, ratio=ratio, slack=slack)]
    out: np.ndarray | None = None

    def run(worker: int, feed: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        nonlocal out
        idx, ids, mask = feed
        t0 = time.perf_counter()
        probs = sessions[worker % len(sessions)].run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)
        if out is None:
            out = np.zeros((len(texts), probs.shape[1]), dtype=np.float32)
        out[idx] = probs

    run_concurrently(run, feeds, workers=workers)
    assert out is not None
    return out


def _sequential(session: Any, tok: Tokenizer, texts: list[str], batch: int,
                latencies: list[float] | None = None) -> np.ndarray:
    return _concurrent([session], tok, texts, batch, workers=1, latencies=latencies)


def _pairs(base: Any, variant: Any, texts: list[str], pairs: int) -> dict[str, Any]:
    """``pairs`` alternating passes (base, then variant) over all ``texts``; median of the pair ratios."""
    base(texts[:64])
    variant(texts[:64])
    rates, bases = [], []
    for _ in range(pairs):
        for run, into in ((base, bases), (variant, rates)):
            t0 = time.perf_counter()
            run(texts)
            into.append(len(texts) / (time.perf_counter() - t0))
    ratios = [v / b for v, b in zip(rates, bases, strict=True)]
    return {"texts_per_s": rates, "sequential_texts_per_s": bases, "pair_ratios": ratios,
            "vs_sequential": float(np.median(ratios)), "load_average_after": load_average()}


def _peak_rss(graph: Path, bundle: Path, sessions: int, threads: int, workers: int, texts: int) -> dict[str, float]:
    """RSS of a fresh process that opens ``sessions`` sessions and runs ``texts`` test texts through them."""
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import optimize as o; "
            "import pandas as pd; from pathlib import Path; "
            f"tok, texts = o._tokenizer_and_timed(Path({str(bundle)!r}), pd.read_csv(o.shared_data() / 'banking77' "
            f"/ 'test.csv')['text'].tolist()[:{texts}], {texts}); before = o._rss_mb(); "
            f"s = [o._session(Path({str(graph)!r}), {threads}) for _ in range({sessions})]; loaded = o._rss_mb(); "
            f"o._concurrent(s, tok, texts, 64, workers={workers}); "
            "print(before, loaded, o._rss_mb(), o._rss_mb('VmHWM'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, loaded, after, peak = map(float, out[-4:])
    return {"rss_before_sessions_mb": before, "rss_sessions_loaded_mb": loaded, "rss_after_pass_mb": after,
            "peak_rss_mb": peak}


def _offline_runtime_only(args: argparse.Namespace, texts: list[str]) -> None:
    """``--runtime``: sequential batches (today's offline path) against batches run concurrently, paired."""
    load_at_start = load_average()
    bundle = args.bundle
    graph = bundle / json.loads((bundle / "pipeline.json").read_text())["graphs"]["int8"]
    tok, _ = _tokenizer_and_timed(bundle, texts, len(texts))
    threads = args.threads
    base = _session(graph, threads)
    one = _session(graph, 1)
    other = _session(graph, 1)
    ref = _sequential(base, tok, texts, 64)
    rows: dict[str, Any] = {}

    def row(name: str, variant: Any, batch: int = 64, *, sample: list[str] | None = None,
            ref_batch: np.ndarray | None = None) -> None:
        sample = sample or texts
        out = variant(sample)
        want = ref if ref_batch is None else ref_batch
        rows[name] = {**_pairs(lambda t: _sequential(base, tok, t, batch), variant, sample, args.repeats),
                      "max_abs_diff_vs_sequential": float(np.abs(out - want).max()),
                      "bit_equal_to_sequential": bool(np.array_equal(out, want))}
        print(name, json.dumps(rows[name]), flush=True)

    workers = threads
    row("shared_1_thread_session_2_workers_batch_64", lambda t: _concurrent([one], tok, t, 64, workers=workers))
    row("shared_1_thread_session_2_workers_batch_128", lambda t: _concurrent([one], tok, t, 128, workers=workers))
    row("shared_1_thread_session_2_workers_exact_length_batch_64",
        lambda t: _concurrent([one], tok, t, 64, workers=workers, ratio=1.0, slack=0))
    row("two_1_thread_sessions_2_workers_batch_64", lambda t: _concurrent([one, other], tok, t, 64, workers=workers))
    row(f"the_{threads}_thread_session_2_workers_batch_64",
        lambda t: _concurrent([base], tok, t, 64, workers=workers))
    # what is adopted: TextRuntime.predict_proba itself, against the same runtime held to one batch at a time
    from aiforge.bundle.runtime import Runtime

    adopted, sequential = Runtime.load(bundle, threads=threads), Runtime.load(bundle, threads=threads)
    sequential.offline_min_batches = 1 << 30
    for batch in (64, 128):
        adopted.batch_size = sequential.batch_size = batch
        rows[f"adopted_runtime_batch_{batch}"] = {
            **_pairs(sequential.predict_proba, adopted.predict_proba, texts, args.repeats),
            "max_abs_diff_vs_sequential": float(np.abs(adopted.predict_proba(texts) -
                                                       sequential.predict_proba(texts)).max()),
            "baseline": f"the same TextRuntime, batches one after another, batch {batch}"}
        print(f"adopted_runtime_batch_{batch}", json.dumps(rows[f"adopted_runtime_batch_{batch}"]), flush=True)
    # small batches: 2 workers x 1 intra-op thread against 1 x 2, throughput and the latency of each call
    latency: dict[str, Any] = {}
    for batch in (1, 16):
        sample = texts[:args.batch1_texts] if batch == 1 else texts
        ref_b = _sequential(base, tok, sample, batch)
        row(f"shared_1_thread_session_2_workers_batch_{batch}",
            lambda t, b=batch: _concurrent([one], tok, t, b, workers=workers), batch, sample=sample, ref_batch=ref_b)
        for name, sessions, w in ((f"sequential_{threads}_threads", [base], 1), ("sequential_1_thread", [one], 1),
                                  ("2_workers_1_thread", [one], workers)):
            calls: list[float] = []
            _concurrent(sessions, tok, sample, batch, workers=w, latencies=calls)
            latency[f"batch_{batch}_{name}"] = {"p50_ms": float(np.percentile(calls, 50)) * 1e3,
                                                "p99_ms": float(np.percentile(calls, 99)) * 1e3}
        print("latency", json.dumps(latency), flush=True)
    rss = {name: _peak_rss(graph, bundle, n, t, w, len(texts)) for name, n, t, w in (
        (f"one_{threads}_thread_session_sequential", 1, threads, 1),
        ("one_1_thread_session_2_workers", 1, 1, workers), ("two_1_thread_sessions_2_workers", 2, 1, workers))}
    print("rss", json.dumps(rss), flush=True)
    payload = _earlier()
    payload["offline_runtime"] = {
        "graph": f"the bundle's int8 graph ({graph.name}, {graph.stat().st_size / 1e6:.1f} MB)",
        "baseline": f"sequential: length-sorted batches (ratio 1.2 + 2) one after another on one {threads}-thread "
                    "session (the offline path before)",
        "method": f"all {len(texts)} BANKING77 test texts per pass ({args.batch1_texts} at batch 1); --repeats "
                  "alternating pairs (sequential pass, then the variant); ratio = median of the pair ratios",
        "command": f"python bench/optimize.py --runtime --bundle PATH --threads {threads} --repeats {args.repeats}",
        "available_cpus": available_cpus(), "threads": threads, "texts": len(texts),
        "load_average_at_start": load_at_start, "load_average_at_end": load_average(),
        "rows": rows, "call_latency": latency, "rss": rss}
    print(f"wrote {write_result('optimize', payload)}")


def _calibration_texts() -> list[str]:
    """256 BANKING77 training texts, as the export draws them (seed 0): what smoothed recipes fit on."""
    from aiforge.tasks.text.parity import calibration_texts

    return calibration_texts(pd.read_csv(shared_data() / "banking77" / "train.csv")["text"].tolist(), seed=0)


def _calibration_feeds(tok: Tokenizer, texts: list[str]) -> list[dict[str, np.ndarray]]:
    return [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in encode_batches(tok, texts, 16)]


def _levels_agreement(path: Path, tok: Tokenizer, texts: list[str], ref: np.ndarray, threads: int) -> dict[str, Any]:
    """Top-1 agreement with fp32 and max |dp| against the default level's output, at every graph optimization level
    (onnxruntime's fusions must not change what the graph computes: the MatMulIntegerToFloat trap)."""
    import onnxruntime as ort

    out: dict[str, Any] = {}
    default = None
    for name in ("all", "disable_all", "basic", "extended"):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_{name.upper()}"
                                                   if name == "disable_all" else f"ORT_ENABLE_{name.upper()}")
        probs = probabilities(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), tok,
                              texts, 64)
        default = probs if default is None else default
        out[name] = {"top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                     "max_abs_prob_diff_vs_level_all": float(np.abs(probs - default).max())}
    return out


# --- --cpu-portability: the same int8 graph on a CPU whose int8 sums saturate (x86 without VNNI) -----------------

def _clamp_pairs(src: Path, dst: Path, limit: int = 128) -> dict[str, int]:
    """``src`` with each int8 weight pair (rows 2j, 2j + 1 of a MatMul's B) scaled so |w| + |w'| <= ``limit``:
    255 * 128 fits int16, so vpmaddubsw cannot saturate (a diagnostic: it costs agreement)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    changed = total = 0
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type in ("MatMulInteger", "MatMulIntegerToFloat") else None
        a = numpy_helper.to_array(w) if w is not None else None
        if w is None or a is None or a.dtype != np.int8 or a.ndim != 2:
            continue
        k = a.shape[0] - a.shape[0] % 2
        pairs = a[:k].astype(np.int32).reshape(k // 2, 2, -1)
        sums = np.abs(pairs).sum(1)
        total, changed = total + sums.size, changed + int((sums > limit).sum())
        factor = np.where(sums > limit, limit / np.maximum(sums, 1), 1.0)[:, None, :]
        a = a.copy()
        a[:k] = np.trunc(pairs * factor).astype(np.int8).reshape(k, -1)
        w.CopyFrom(numpy_helper.from_array(a, w.name))
    onnx.save(model, str(dst))
    return {"pairs_changed": changed, "pairs": total}


def _cpu_portability(args: argparse.Namespace, texts: list[str]) -> None:
    """``--cpu-portability``: the first recipe's int8 graph as onnxruntime runs it on this CPU, exactly (u8u8,
    ``session.x64quantprecision``), with 7-bit weights, and with weight pairs clamped: agreement with fp32 on
    every test text, batch 1 against batch 64 (400 texts) and the 40-probe batch dependence."""
    import dataclasses

    from aiforge.bundle.cpu import int8_cpu

    bundle = args.bundle
    tok, _ = _tokenizer_and_timed(bundle, texts, len(texts))
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-cpu-") as tmp:
        work = Path(tmp)
        fused = work / "fused.onnx"
        fuse_transformer(bundle / "model.onnx", fused, num_heads=HEADS)
        ref = probabilities(_session(fused, args.threads), tok, texts, 64)
        feeds = _calibration_feeds(tok, _calibration_texts())
        graphs = {"8_bit_weights": work / "w8.onnx", "7_bit_weights": work / "w7.onnx"}
        quantize_recipe(fused, graphs["8_bit_weights"], RECIPES[0], calibration=feeds)
        quantize_recipe(fused, graphs["7_bit_weights"], dataclasses.replace(RECIPES[0], reduce_range=True),
                        calibration=feeds)
        clamped = _clamp_pairs(graphs["8_bit_weights"], work / "pairs.onnx")
        exact = {"session.x64quantprecision": "1"}
        rows: dict[str, Any] = {}
        outputs: dict[str, np.ndarray] = {}
        for name, path, config in (("8_bit_weights", graphs["8_bit_weights"], None),
                                   ("8_bit_weights_exact_u8u8", graphs["8_bit_weights"], exact),
                                   ("7_bit_weights", graphs["7_bit_weights"], None),
                                   ("8_bit_weight_pairs_clamped_to_128", work / "pairs.onnx", None)):
            session = _session(path, args.threads, config)
            probs = outputs[name] = probabilities(session, tok, texts, 64)
            alone = probabilities(session, tok, texts[:400], 1)
            rows[name] = {"top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                          "max_abs_prob_diff_vs_fp32": float(np.abs(probs - ref).max()),
                          "batch_1_vs_batch_64_max_abs_diff_400_texts": float(np.abs(alone - probs[:400]).max()),
                          "batch_dependence_40_probes": batch_dependence(session, tok, texts, probes=40)}
            if config:
                rows[name]["session_config"] = config
            print(name, json.dumps(rows[name]), flush=True)
        # the clamped graph run exactly (u8u8) gives what it gives by default: nothing left to saturate
        clamped_exact = probabilities(_session(work / "pairs.onnx", args.threads, exact), tok, texts, 64)
        rows["8_bit_weight_pairs_clamped_to_128"].update(clamped, max_abs_diff_vs_itself_exact_u8u8=float(np.abs(
            outputs["8_bit_weight_pairs_clamped_to_128"] - clamped_exact).max()))
    payload = _earlier()
    payload["cpu_portability"] = {
        "command": f"python bench/optimize.py --cpu-portability --bundle PATH --threads {args.threads}",
        "machine": machine(), "int8_cpu": int8_cpu(), "recipe": RECIPES[0].name, "texts": len(texts),
        "rows": rows}
    print(f"wrote {write_result('optimize', payload)}")


def _ceiling(args: argparse.Namespace, texts: list[str]) -> None:
    """``--ceiling``: the most texts/s this CPU's GEMM peaks allow on the BANKING77 test set (FLOPs per text at
    its real token counts over the best square GEMM rate, n = 1024 and 2048), against what the offline runtime
    (``Runtime.predict_proba`` on the bundle's int8 graph, every test text, best of ``--repeats``) reaches.
    Each run is appended to ``ceiling[CPU model]["runs"]``; the CPU's ceiling is the one of its highest peak."""
    from aiforge.bundle.runtime import Runtime

    load_at_start = load_average()
    tok, _ = _tokenizer_and_timed(args.bundle, texts, len(texts))
    tokens = np.array([len(e.ids) for e in tok.encode_batch(texts)], dtype=np.float64)
    flops_per_text = float(sum(t * flops_per_token(t) for t in tokens) / len(tokens))
    peaks = [peak_gemm(args.threads, n) for n in (1024, 2048)]
    int8_peak = max(p["onnxruntime_int8_gops"] for p in peaks)
    fp32_peak = max(max(p["numpy_fp32_gflops"], p["onnxruntime_fp32_gflops"]) for p in peaks)
    runtime = Runtime.load(args.bundle, threads=args.threads)
    runtime.predict_proba(texts[:256])
    passes = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        runtime.predict_proba(texts)
        passes.append(len(texts) / (time.perf_counter() - t0))
    ceiling_int8 = int8_peak * 1e9 / flops_per_text
    row = {
        "command": (f"python bench/optimize.py --ceiling --bundle PATH --threads {args.threads} "
                    f"--repeats {args.repeats}"),
        "machine": machine(), "threads": args.threads, "texts": len(texts),
        "mean_tokens_per_text": float(tokens.mean()), "flops_per_text": flops_per_text,
        "peak_gemm": peaks, "int8_peak_gops": int8_peak, "fp32_peak_gflops": fp32_peak,
        "ceiling_texts_per_s_at_int8_peak": ceiling_int8,
        "ceiling_texts_per_s_at_fp32_peak": fp32_peak * 1e9 / flops_per_text,
        "offline_runtime": {"graph": runtime.precision, "texts_per_s_passes": passes,
                            "texts_per_s_best": max(passes), "fraction_of_int8_ceiling": max(passes) / ceiling_int8},
        "load_average_at_start": load_at_start, "load_average_at_end": load_average()}
    print(json.dumps(row, indent=1), flush=True)
    payload = _earlier()
    # every run is kept: a GEMM peak measured on a busy machine is low, and the ceiling is the highest one
    cpu = payload.setdefault("ceiling", {}).setdefault(row["machine"].get("cpu_model", "this CPU"), {})
    runs = [*cpu.get("runs", []), row]
    highest = max(runs, key=lambda r: r["int8_peak_gops"])
    cpu.update(runs=runs, highest_int8_peak_gops=highest["int8_peak_gops"],
               ceiling_texts_per_s_at_highest_int8_peak=highest["ceiling_texts_per_s_at_int8_peak"],
               best_offline_runtime_texts_per_s=max(r["offline_runtime"]["texts_per_s_best"] for r in runs))
    print(f"wrote {write_result('optimize', payload)}")


def _graphs_g18(args: argparse.Namespace, texts: list[str]) -> None:
    """``--graphs-g18``: fp32, the shipped-before int8 graph, the same graph with the compact per-row quantizers,
    and the smoothed all-int8 recipe; agreement, 40-probe batch dependence, size, texts/s paired against the
    shipped-before graph at batch 1/16/64; the SmoothQuant alpha sweep. Written into optimize.json (graphs_g18)."""
    from aiforge.optimize.quantize import QuantRecipe
    from aiforge.optimize.smooth import smooth_matmuls

    load_at_start = load_average()
    bundle = args.bundle
    tok, timed = _tokenizer_and_timed(bundle, texts, args.timing_texts)
    calibration = _calibration_texts()

    def feeds() -> list[dict[str, np.ndarray]]:
        return _calibration_feeds(tok, calibration)

    recipe = RECIPES[0]
    out: dict[str, Any] = {"command": f"python bench/optimize.py --graphs-g18 --bundle PATH --threads {args.threads} "
                                      f"--timing-texts {args.timing_texts} --batch1-texts {args.batch1_texts} "
                                      f"--repeats {args.repeats} --probes {args.probes}",
                           "method": "agreement and batch dependence on all test texts (probes alone vs 4 random "
                                     "batches of 1-31 mates, at 1 and 2 threads); speed: --repeats alternating pairs "
                                     "(shipped-before, then the graph) per batch size, ratio = median of the pair "
                                     "ratios; --timing-texts evenly spaced texts at batch 16/64, --batch1-texts at 1",
                           "threads": args.threads, "timing_texts": len(timed), "calibration_texts": len(calibration),
                           "recipe": recipe.name, "load_average_at_start": load_at_start}
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-optimize-") as tmp:
        work = Path(tmp)
        fused = work / "fused.onnx"
        fuse_transformer(bundle / "model.onnx", fused, num_heads=HEADS)
        before = next(r for r in RECIPES if r.name == SHIPPED_BEFORE)
        graphs = {"fp32": bundle / "model.onnx", "fused-int8-shipped-before": work / "before.onnx",
                  "fused-int8-shipped-before-compact-quantizers": work / "compact.onnx",
                  "fused-int8-" + recipe.name: work / "new.onnx"}
        quantize_recipe(fused, graphs["fused-int8-shipped-before"], before, compact=False)
        quantize_recipe(fused, graphs["fused-int8-shipped-before-compact-quantizers"], before)
        quantize_recipe(fused, graphs["fused-int8-" + recipe.name], recipe, calibration=feeds())
        ref = probabilities(_session(fused, args.threads), tok, texts, 64)
        base = _session(graphs["fused-int8-shipped-before"], args.threads)
        rows: dict[str, Any] = {}
        for name, path in graphs.items():
            part_start = load_average()
            session = _session(path, args.threads)
            probs = probabilities(session, tok, texts, 64)
            row: dict[str, Any] = {
                "size_mb": path.stat().st_size / 1e6,
                "top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                "max_abs_prob_diff_vs_fp32": float(np.abs(probs - ref).max()),
                "max_abs_prob_change_alone_vs_batched": {
                    f"threads_{t}": batch_dependence(_session(path, t), tok, texts, probes=args.probes)
                    for t in (1, 2)}}
            if "compact" in name or name.endswith(recipe.name):
                row["graph_optimization_levels"] = _levels_agreement(path, tok, texts, ref, args.threads)
            if name != "fused-int8-shipped-before":
                row["paired_vs_shipped_before"] = {
                    f"batch_{b}": _paired(base, session, tok, timed if b > 1 else texts[:args.batch1_texts],
                                          args.repeats, batch=b) for b in (1, 16, 64)}
            row["load_average_at_start"], row["load_average_at_end"] = part_start, load_average()
            rows[name] = row
            print(name, json.dumps(row), flush=True)
        out["graphs"] = rows
        sweep_start = load_average()
        sweep: dict[str, Any] = {}
        for alpha in (0.5, 0.65, 0.8, None):
            source = fused
            if alpha is not None:
                source = work / f"smoothed_{alpha}.onnx"
                smooth_matmuls(fused, source, calibration=feeds(), alpha=alpha)
            for per_channel in (False, True):
                graph = work / f"sweep_{alpha}_{per_channel}.onnx"
                quantize_recipe(source, graph, QuantRecipe("sweep", keep_embeddings_fp32=False,
                                                           keep_down_projections_fp32=False, per_channel=per_channel))
                probs = probabilities(_session(graph, args.threads), tok, texts, 64)
                label = "no_smoothing" if alpha is None else f"alpha_{alpha}"
                sweep[f"{label}_{'per_channel' if per_channel else 'per_tensor'}_weights"] = {
                    "top1_agreement_with_fp32": float((probs.argmax(1) == ref.argmax(1)).mean()),
                    "size_mb": graph.stat().st_size / 1e6}
        out["smoothquant_sweep"] = {"what": "every weight MatMul and the embeddings int8, per-row activations, "
                                            "down-projections smoothed with alpha (or not)", "rows": sweep,
                                    "load_average_at_start": sweep_start, "load_average_at_end": load_average()}
        print("sweep", json.dumps(sweep), flush=True)
    out["load_average_at_end"] = load_average()
    payload = _earlier()
    payload["graphs_g18"] = {**out, "machine": machine()}
    print(f"wrote {write_result('optimize', payload)}")


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
    parser.add_argument("--experiments", action="store_true",
                        help="only the batch-64 profile and the experiments (threads, spinning, bucketing, batch "
                             "128/256, IO binding, static QDQ) on --bundle, written into optimize.json")
    parser.add_argument("--profile-only", action="store_true",
                        help="with --experiments: only the batch-64 profile of --fused-recipe "
                             "(profile_batch_64_by_recipe)")
    parser.add_argument("--candidates", action="store_true",
                        help="only the MatMulNBits candidates against the recipe shipped before (paired), written "
                             "into optimize.json (matmulnbits_candidates)")
    parser.add_argument("--candidate", action="append", default=[], choices=list(NBITS_CANDIDATES),
                        help="with --candidates: only these (repeatable)")
    parser.add_argument("--runtime", action="store_true",
                        help="only the offline runtime: sequential batches against batches run concurrently on one "
                             "session (paired), written into optimize.json (offline_runtime)")
    parser.add_argument("--graphs-g18", action="store_true",
                        help="only fp32, the shipped-before int8 graph, it with compact quantizers and the smoothed "
                             "all-int8 recipe, paired at batch 1/16/64, and the SmoothQuant alpha sweep (graphs_g18)")
    parser.add_argument("--cpu-portability", action="store_true",
                        help="only the first recipe's int8 graph as this CPU runs it, exactly (u8u8), with 7-bit "
                             "weights and with weight pairs clamped (cpu_portability)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only this CPU's texts/s ceiling at its GEMM peaks and the offline runtime against it")
    args = parser.parse_args()
    modes = ((args.cpu_portability, "--cpu-portability", lambda: 2, _cpu_portability),
             (args.ceiling, "--ceiling", lambda: 2, _ceiling),
             (args.runtime, "--runtime", available_cpus, _offline_runtime_only),
             (args.graphs_g18, "--graphs-g18", lambda: 2, _graphs_g18),
             (args.candidates, "--candidates", lambda: 2, _candidates_only))
    for chosen, flag, default_threads, run in modes:  # the one-part modes: each needs --bundle, then returns
        if chosen:
            if args.bundle is None:
                parser.error(f"{flag} needs --bundle")
            args.threads = args.threads or default_threads()
            run(args, pd.read_csv(shared_data() / "banking77" / "test.csv")["text"].tolist())
            return
    if args.experiments:
        if args.bundle is None:
            parser.error("--experiments needs --bundle")
        args.threads = args.threads or 2
        args.fused_recipe = args.fused_recipe or "embeddings+weights-except-down-projections"
        _experiments_only(args, pd.read_csv(shared_data() / "banking77" / "test.csv")["text"].tolist())
        return
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
        unfused = next(r for r in RECIPES if r.name == "weights-except-down-projections")
        graphs = {"fp32": fp32, "int8-per-tensor": Path(tmp) / "per_tensor.onnx",
                  "int8-unfused-per-row": Path(tmp) / "per_row.onnx", "fused-fp32": Path(tmp) / "fused.onnx",
                  "fused-int8-shipped-before": Path(tmp) / "fused_int8_before.onnx"}
        quantize_recipe(fp32, graphs["int8-per-tensor"], unfused, per_row=False)
        quantize_recipe(fp32, graphs["int8-unfused-per-row"], unfused)
        fused = fuse_transformer(fp32, graphs["fused-fp32"], num_heads=HEADS)
        quantize_recipe(graphs["fused-fp32"], graphs["fused-int8-shipped-before"],
                        next(r for r in RECIPES if r.name == SHIPPED_BEFORE), compact=False)
        print("fused", fused, flush=True)
        lengths = np.array([len(e.ids) for e in tok.encode_batch(texts)])
        timed = texts[::max(1, len(texts) // args.timing_texts)][:args.timing_texts]
        rows: dict[str, Any] = {}
        ref = None
        shipped: dict[str, Any] = {}
        for name, path in [*graphs.items(), ("fused-int8", Path(tmp) / "fused_int8.onnx")]:
            if name == "fused-int8":  # the export's choice: the first recipe reaching 99 % on the full test set
                for recipe in [r for r in RECIPES if args.fused_recipe in (None, r.name)]:
                    quantize_recipe(graphs["fused-fp32"], path, recipe, calibration=_calibration_feeds(
                        tok, _calibration_texts()) if recipe.needs_calibration else None)
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
        # the new int8 graph against the one shipped before, alternating (the load moves between passes)
        paired = {f"batch_{b}": _paired(onnx_session(graphs["fused-int8-shipped-before"], threads=args.threads),
                                        onnx_session(Path(tmp) / "fused_int8.onnx", threads=args.threads), tok,
                                        timed if b > 1 else texts[:args.batch1_texts], args.repeats, batch=b)
                  for b in (1, 16, 64)}
        print("paired", paired, flush=True)
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
    old, new = rows["int8-per-tensor"], rows["int8-unfused-per-row"]
    fast, before = rows["fused-int8"], rows["fused-int8-shipped-before"]
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
                   **{f"fused_int8_vs_int8_unfused_per_row_{k}": fast["offline_texts_per_s"][k] /
                      new["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   **{f"fused_int8_vs_fused_int8_shipped_before_{k}": fast["offline_texts_per_s"][k] /
                      before["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   **{f"paired_fused_int8_vs_fused_int8_shipped_before_{k}": v["vs_baseline"]
                      for k, v in paired.items()},
                   **{f"fused_int8_vs_fp32_{k}": fast["offline_texts_per_s"][k] /
                      rows["fp32"]["offline_texts_per_s"][k] for k in new["offline_texts_per_s"]},
                   "fused_int8_size_vs_fused_int8_shipped_before": fast["size_mb"] / before["size_mb"]},
        "paired_vs_shipped_before": paired,
        # sweeps not rerun in this run keep their earlier tables (each records its own command and load)
        "optimize_sweeps": {**_earlier_sweeps(), **sweeps},
        # the --experiments and --candidates parts are separate runs: kept as they are (each has its command)
        **{k: v for k, v in _earlier().items() if k in ("profile_batch_64", "experiments", "matmulnbits_candidates",
                                                      "profile_batch_64_by_recipe", "offline_runtime",
                                                      "offline_runtime_loaded_run")},
    }
    print(payload["ratios"])
    print(f"wrote {write_result('optimize', payload)}")


def _earlier() -> dict[str, Any]:
    path = RESULTS / "optimize.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    return earlier if isinstance(earlier, dict) else {}


def _earlier_sweeps() -> dict[str, Any]:
    earlier = _earlier().get("optimize_sweeps", {})
    return earlier if isinstance(earlier, dict) else {}


if __name__ == "__main__":
    main()
