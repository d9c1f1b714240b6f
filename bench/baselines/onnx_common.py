"""The peers' model: the aiforge bundle's own ONNX graph and tokenizer, loaded by path (no aiforge import).

Reads BUNDLE_DIR (an exported aiforge bundle) and PRECISION (default int8). The bundle's
``pipeline.json`` names the graph file, the tokenizer and ``max_length``; the graph takes
``input_ids`` and ``attention_mask`` and includes pooling, normalisation, the head and softmax,
so the pre-processing is the tokenizer's truncation and right-padding with 0, as aiforge does.
The session uses as many intra-op threads as this process may run on (``taskset`` is respected).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

BUNDLE = Path(os.environ["BUNDLE_DIR"])
PIPELINE = json.loads((BUNDLE / "pipeline.json").read_text())
LABELS: list[str] = list(PIPELINE["labels"])
OUTPUT: str = PIPELINE.get("output", "probabilities")
TOKENIZER = Tokenizer.from_file(str(BUNDLE / PIPELINE.get("tokenizer", "tokenizer.json")))
TOKENIZER.enable_truncation(max_length=int(PIPELINE["max_length"]))
TOKENIZER.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text of the batch
_options = ort.SessionOptions()
_options.intra_op_num_threads = len(os.sched_getaffinity(0))
_options.inter_op_num_threads = 1
_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
SESSION = ort.InferenceSession(str(BUNDLE / PIPELINE["graphs"][os.environ.get("PRECISION", "int8")]), _options,
                               providers=["CPUExecutionProvider"])


def classify(texts: list[str]) -> list[dict[str, object]]:
    """Top label and its probability for each text (one graph run for the whole list)."""
    enc = TOKENIZER.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    probs = SESSION.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]
    best = probs.argmax(axis=1)
    return [{"label": LABELS[int(i)], "score": float(probs[k, i])} for k, i in enumerate(best)]
