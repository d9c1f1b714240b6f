"""The one set of checks every runtime applies to a client's values before they join a batch.

JSON can carry what no model can take: a lone surrogate (``"\\ud800"``) is a valid JSON string
escape but no valid Unicode text (the tokenizer and onnxruntime fail on it, taking a whole batch
with them); a nested value can be deeper than Python's recursion limit; an integer can be longer
than Python converts. Each check here names the item (``where``) and what to send instead, so a
runtime's ``parse_items``/``v2_inputs`` refuses a bad item on its own, with a 4xx, before batching.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from aiforge.errors import InputError

__all__ = ["MAX_JSON_DEPTH", "check_strings", "check_text", "loads_json"]


MAX_JSON_DEPTH = 32
"""Deepest nesting of a value inside one item (a record, a filter); real inputs use two or three."""


def _surrogate_at(text: str) -> int | None:
    """The index of the first lone surrogate in ``text``, or None when it is valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(value: object, where: str, *, max_chars: int | None = None) -> str:
    """``value`` if it is a string of valid Unicode within ``max_chars`` characters.

    Raises:
        InputError: not a string, a lone surrogate, or over ``max_chars``; names ``where``.
    """
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {type(value).__name__}")
    at = _surrogate_at(value)
    if at is not None:
        raise InputError(f"{where}: not valid Unicode text: lone surrogate U+{ord(value[at]):04X} at character "
                         f"{at}; send UTF-8 text (a JSON \\ud800-\\udfff escape must be half of a pair)")
    if max_chars is not None and len(value) > max_chars:
        raise InputError(f"{where}: text of {len(value)} characters, over the limit of {max_chars}")
    return value


def _nodes(value: object, where: str, max_depth: int) -> Iterator[tuple[object, str]]:
    """Every value inside ``value`` with its path (``where.key[2]``), walked without recursion.

    Raises:
        InputError: ``value`` nests deeper than ``max_depth``.
    """
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        node, at, depth = stack.pop()
        yield node, at
        if isinstance(node, dict | list):
            if depth >= max_depth:
                raise InputError(f"{where}: nested more than {max_depth} levels deep; send flat values")
            if isinstance(node, dict):
                for key, child in node.items():
                    name = check_text(key, f"{at} (a key)") if isinstance(key, str) else str(key)
                    stack.append((child, f"{at}.{name}", depth + 1))
            else:
                stack.extend((child, f"{at}[{i}]", depth + 1) for i, child in enumerate(node))


def check_strings(value: object, where: str, *, max_chars: int | None = None,
                  max_depth: int = MAX_JSON_DEPTH) -> None:
    """Check every string (object keys included) inside a JSON value with :func:`check_text`.

    Walks iteratively, so a value nested deeper than the recursion limit is refused, not a crash.

    Raises:
        InputError: a string fails :func:`check_text`, or the value nests deeper than ``max_depth``;
            the message names the path (``where.key[2]``).
    """
    for node, at in _nodes(value, where, max_depth):
        if isinstance(node, str):
            check_text(node, at, max_chars=max_chars)


def loads_json(text: str | bytes, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON from a client, refusing what Python's parser cannot take as a client error.

    Only the structure is checked (its strings are the caller's to check, e.g. with :func:`check_strings`).

    Raises:
        InputError: not JSON, not UTF-8, nested deeper than ``max_depth``, or an integer over
            Python's digit limit.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply (the limit is {max_depth} levels)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InputError(f"{where}: JSON value refused ({exc})") from None
    for node, _ in _nodes(value, where, max_depth):
        if isinstance(node, float) and not math.isfinite(node):  # json.loads takes NaN and Infinity
            raise InputError(f"{where}: JSON holds {node}; numbers must be finite")
    return value
