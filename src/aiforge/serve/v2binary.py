"""The Open Inference Protocol's binary tensor data extension (Triton's, which tritonclient and the
KServe SDK send by default): a JSON header of ``Inference-Header-Content-Length`` bytes, then each
binary tensor's bytes in input order (``parameters.binary_data_size``).

BYTES elements are a 4-byte little-endian length then the bytes; numeric tensors are their
little-endian values, row-major. Answers can be binary too (``parameters.binary_data_output`` on
the request, or ``binary_data`` on a requested output).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.bundle.inputs import loads_json
from aiforge.errors import InputError
from aiforge.serve.errors import ApiError

__all__ = ["HEADER", "BinaryAnswer", "decode_bytes", "encode_bytes", "encode_outputs", "parse_infer_body"]

HEADER = "inference-header-content-length"

NUMPY_OF = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
            "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
            "FP32": np.float32, "FP64": np.float64}


def decode_bytes(raw: bytes, *, where: str) -> list[bytes]:
    """The elements of a binary BYTES tensor.

    Raises:
        ApiError: 400, an element's length runs past the end of the data.
    """
    out: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ApiError(400, f"{where}: BYTES element {len(out)} has a truncated 4-byte length prefix")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise ApiError(400, f"{where}: BYTES element {len(out)} says {size} bytes, but only {len(raw) - at} "
                                "are left in its binary data")
        out.append(raw[at:at + size])
        at += size
    return out


def encode_bytes(items: list[str]) -> bytes:
    """A BYTES tensor in the binary form: each element's length (4 bytes, little-endian), then its UTF-8."""
    parts = []
    for item in items:
        data = item.encode("utf-8")
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _json(raw: bytes) -> Any:
    try:
        return loads_json(raw, "request body")
    except InputError as exc:  # deep nesting and 5,000-digit integers too: a client's mistake, never a 500
        raise ApiError(400, str(exc)) from None


def _tensor_data(tensor: dict[str, Any], raw: bytes, *, where: str, image_input: bool) -> list[Any]:
    datatype = str(tensor.get("datatype", "")).upper()
    shape = tensor.get("shape")
    count = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape) \
        else None
    if datatype == "BYTES":
        elements = decode_bytes(raw, where=where)
        if image_input:  # raw encoded images: handed on base64-encoded, as JSON clients send them
            values: list[Any] = [base64.b64encode(e).decode("ascii") for e in elements]
        else:
            values = []
            for i, e in enumerate(elements):
                try:
                    values.append(e.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ApiError(400, f"{where}: BYTES element {i} is not UTF-8 text ({exc.reason} at byte "
                                        f"{exc.start})") from None
    elif datatype in NUMPY_OF:
        dtype = np.dtype(NUMPY_OF[datatype]).newbyteorder("<")
        if len(raw) % dtype.itemsize:
            raise ApiError(400, f"{where}: {len(raw)} bytes of binary data is not a whole number of {datatype} "
                                f"values ({dtype.itemsize} bytes each)")
        values = np.frombuffer(raw, dtype=dtype).tolist()
    else:
        raise ApiError(400, f"{where}: binary data of datatype {tensor.get('datatype')!r} is not supported; use "
                            f"BYTES or one of {sorted(NUMPY_OF)}")
    if count is not None and count != len(values):
        raise ApiError(400, f"{where}: shape {shape} does not match the {len(values)} elements of its binary data")
    return values


def parse_infer_body(body: bytes, header_length: str | None, *, image_inputs: frozenset[str]) -> Any:
    """The infer request as JSON, with every binary tensor's ``data`` filled in from the binary part.

    ``image_inputs`` names the inputs whose BYTES elements are encoded images (kept as base64 strings).

    Raises:
        ApiError: 400, the header length, the JSON or a binary tensor is malformed.
    """
    if header_length is None:
        request = _json(body)
        binary = b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise ApiError(400, f"Inference-Header-Content-Length: expected the JSON header's size in bytes, at most "
                                f"the body's {len(body)}, got {header_length!r}")
        size = int(header_length)
        request = _json(body[:size])
        binary = body[size:]
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return request  # the request model names what is wrong
    at = 0
    for k, tensor in enumerate(request["inputs"]):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size_of = params.get("binary_data_size") if isinstance(params, dict) else None
        if size_of is None:
            continue
        where = f"inputs[{k}] ({tensor.get('name')!r})"
        if not isinstance(size_of, int) or isinstance(size_of, bool) or size_of < 0:
            raise ApiError(400, f"{where}: parameters.binary_data_size must be a byte count, got {size_of!r}")
        if "data" in tensor:
            raise ApiError(400, f"{where}: has both data and parameters.binary_data_size; send one")
        if at + size_of > len(binary):
            raise ApiError(400, f"{where}: binary_data_size {size_of} runs past the end of the body's binary part "
                                f"({len(binary) - at} bytes left; is Inference-Header-Content-Length set?)")
        is_image = str(tensor.get("name")) in image_inputs or (len(image_inputs) == 1 and len(request["inputs"]) == 1)
        tensor["data"] = _tensor_data(tensor, binary[at:at + size_of], where=where, image_input=is_image)
        at += size_of
        rest = {p: v for p, v in (params or {}).items() if p != "binary_data_size"}
        tensor["parameters"] = rest or None
    if at != len(binary):
        raise ApiError(400, f"the body has {len(binary) - at} bytes of binary data that no input's "
                            "parameters.binary_data_size accounts for")
    return request


@dataclass(frozen=True)
class BinaryAnswer:
    """An infer answer with binary outputs: the JSON header and the bytes after it."""

    header: bytes
    binary: bytes


def encode_outputs(body: dict[str, Any], binary: set[str]) -> BinaryAnswer:
    """``body``'s outputs named in ``binary`` moved to the binary part (``binary_data_size`` says where)."""
    parts: list[bytes] = []
    outputs = []
    for output in body["outputs"]:
        if output["name"] not in binary:
            outputs.append(output)
            continue
        if output["datatype"] == "BYTES":
            data = encode_bytes([str(x) for x in output["data"]])
        else:
            data = np.asarray(output["data"], dtype=np.dtype(NUMPY_OF[output["datatype"]]).newbyteorder("<")).tobytes()
        parts.append(data)
        outputs.append({k: v for k, v in output.items() if k != "data"}
                       | {"parameters": {**(output.get("parameters") or {}), "binary_data_size": len(data)}})
    header = json.dumps({**body, "outputs": outputs}).encode()
    return BinaryAnswer(header, b"".join(parts))
