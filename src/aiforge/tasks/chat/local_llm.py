"""The local backend without PyTorch: SmolLM2-135M-Instruct as an ONNX decoder with a KV cache, numpy only.

The graph and ``tokenizer.json`` are exported once with PyTorch (:mod:`aiforge.tasks.chat.llm_export`) and
shipped inside the chat bundle. Here: the ChatML prompt (SmolLM2's chat template, without transformers),
greedy or temperature decoding through onnxruntime (the cache stays in onnxruntime's own tensors from one step
to the next, never copied out to numpy; only the logits are, or a quantized graph's 16 rescored top tokens),
and incremental detokenization that holds back a token ending inside a multi-byte character. One generation at
a time per process (a lock); closing the stream stops decoding at the next token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import BundleError, GenerationError
from aiforge.tasks.chat.generate import GenerationRequest, build_messages

__all__ = [
    "DEFAULT_SYSTEM",
    "LLM_EXPORT",
    "LLM_GRAPH",
    "LLM_TOKENIZER",
    "IncrementalDecoder",
    "OnnxLLM",
    "OnnxLocalGenerator",
    "chatml",
]


LLM_GRAPH = "llm.onnx"
LLM_TOKENIZER = "llm_tokenizer.json"
LLM_EXPORT = "llm_export.json"

# SmolLM2-Instruct's chat template adds this system turn when the first message is not a system one.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

_GENERATE_LOCK = threading.Lock()


def chatml(messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """The prompt SmolLM2-Instruct's chat template renders for ``messages`` (ChatML)."""
    parts = []
    if messages and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    parts.extend(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class IncrementalDecoder:
    """Token ids in, text pieces out: a piece is emitted once it no longer ends inside a multi-byte character."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        """The new text ``token`` completes ("" while a character is still incomplete)."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self._prefix:self._read], skip_special_tokens=True)
        now = self.tokenizer.decode(self.ids[self._prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return str(now[len(before):])
        return ""

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character decodes as U+FFFD)."""
        before = self.tokenizer.decode(self.ids[self._prefix:self._read], skip_special_tokens=True)
        now = self.tokenizer.decode(self.ids[self._prefix:], skip_special_tokens=True)
        self._prefix = self._read = len(self.ids)
        return str(now[len(before):]) if len(now) > len(before) else ""


class OnnxLLM:
    """An ONNX causal LM with ``past_key_<i>``/``past_value_<i>`` inputs and ``present_*`` outputs (batch 1)."""

    def __init__(self, graph: Path, tokenizer: Path, *, threads: int | None = None, eos_token_id: int = 2) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        # Half the cores by default: the server's encoder shares the machine, and spinning threads on a busy
        # machine slow decoding down many times.
        opts.intra_op_num_threads = threads or max(1, (os.cpu_count() or 2) // 2)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:  # onnxruntime and tokenizers raise their own types
            raise BundleError(f"{graph}: cannot load the local LLM ({exc}).") from exc
        pasts = [i for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.past_names = [i.name for i in pasts]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.present_names = [n for n in self.output_names if n.startswith("present_")]
        # A quantized graph's fp32 rescoring of its top tokens (llm_export.add_exact_rescoring): greedy reads it.
        self.rescored = {"top_ids", "top_logits"} <= set(self.output_names)
        if not pasts or self.output_names[0] != "logits" or len(self.present_names) != len(pasts):
            raise BundleError(f"{graph}: not a KV-cache decoder (inputs {[i.name for i in pasts][:3]}..., "
                              f"outputs {self.output_names[:3]}...); re-export it with `aiforge build SPEC`.")
        shape = pasts[0].shape
        self.kv_shape = (1, int(shape[1]), 0, int(shape[3]))
        self.eos_token_id = eos_token_id
        self.steps = 0  # tokens decoded by this process (for tests and benches)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_start|>`` included as written)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def token_ids(self, prompt: list[int], *, max_new_tokens: int, temperature: float = 0.0,
                  seed: int | None = None) -> Iterator[int]:
        """New token ids after ``prompt``, greedy (``temperature`` 0) or sampled, ending before EOS."""
        from onnxruntime import OrtValue

        rng = np.random.default_rng(seed)
        empty = OrtValue.ortvalue_from_numpy(np.zeros(self.kv_shape, dtype=np.float32))
        feed: dict[str, Any] = dict.fromkeys(self.past_names, empty)
        ids = np.asarray([prompt], dtype=np.int64)
        for _ in range(max_new_tokens):
            feed["input_ids"] = OrtValue.ortvalue_from_numpy(ids)
            out = dict(zip(self.output_names, self.session.run_with_ort_values(self.output_names, feed), strict=True))
            self.steps += 1
            for name in self.present_names:
                feed["past" + name[len("present"):]] = out[name]
            if temperature > 0:
                logits = out["logits"].numpy()
                z = (logits - logits.max()) / temperature
                p = np.exp(z.astype(np.float64))
                token = int(rng.choice(p.size, p=p / p.sum()))
            elif self.rescored:
                token = int(out["top_ids"].numpy()[int(np.argmax(out["top_logits"].numpy()))])
            else:
                token = int(np.argmax(out["logits"].numpy()))
            if token == self.eos_token_id:
                return
            yield token
            ids = np.asarray([[token]], dtype=np.int64)

    def greedy_ids(self, prompt: list[int], *, max_new_tokens: int) -> list[int]:
        """The greedy continuation's token ids (what the parity checks compare)."""
        return list(self.token_ids(prompt, max_new_tokens=max_new_tokens))


class OnnxLocalGenerator:
    """The ``local`` backend: SmolLM2 through onnxruntime, streamed piece by piece; one generation at a time."""

    name = "local"

    def __init__(self, folder: Path, record: dict[str, Any], *, system_prompt: str | None = None,
                 context_tokens: int = 2048, threads: int | None = None) -> None:
        self.folder = folder
        self.record = record
        self.system_prompt = system_prompt
        self.context_tokens = context_tokens
        self.threads = threads
        self._llm: OnnxLLM | None = None
        self._load_lock = threading.Lock()

    @property
    def llm(self) -> OnnxLLM:
        """The ONNX session, opened on first use."""
        with self._load_lock:
            if self._llm is None:
                try:
                    graph, tokenizer = self.record["graph"], self.record["tokenizer"]
                    eos = int(self.record.get("eos_token_id", 2))
                except (KeyError, TypeError, ValueError) as exc:
                    raise BundleError(f"{self.folder}: pipeline.json local_llm block is incomplete ({exc}).") from exc
                self._llm = OnnxLLM(self.folder / graph, self.folder / tokenizer, threads=self.threads,
                                    eos_token_id=eos)
        return self._llm

    def stream(self, req: GenerationRequest) -> Iterator[str]:
        llm = self.llm
        prompt = llm.encode(chatml(build_messages(req, self.system_prompt)))
        max_new = max(1, min(req.max_tokens, self.context_tokens - len(prompt)))
        with _GENERATE_LOCK:
            decoder = IncrementalDecoder(llm.tokenizer)
            try:
                for token in llm.token_ids(prompt, max_new_tokens=max_new, temperature=req.temperature):
                    piece = decoder.push(token)
                    if piece:
                        yield piece
            except GenerationError:
                raise
            except Exception as exc:  # onnxruntime's own errors
                raise GenerationError(f"local generation failed: {exc}") from exc
            tail = decoder.flush()
            if tail:
                yield tail
