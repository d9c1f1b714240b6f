"""Which int8 instructions this CPU gives onnxruntime, and whether its int8 products can saturate.

On x86-64 without VNNI (AVX2, AVX-512 without ``avx512_vnni``), onnxruntime's uint8 x int8 matrix
kernels multiply with ``vpmaddubsw``, which adds each pair of neighbouring products (k = 2j, 2j + 1)
into a *saturating* int16: a pair ``255·|w| + 255·|w'|`` over 32,767 is clipped. With VNNI (or AMX, or
Arm's dot-product instructions) the products are summed exactly in int32. The same int8 graph therefore
computes slightly different numbers on the two kinds of CPU: the SmoothQuant int8 MiniLM graph agrees
with fp32 on 99.45 % of the BANKING77 test texts where the sums are exact, and on 98.99 % on an AVX2 EPYC
(``bench/results/optimize.json`` → ``cpu_portability``). An export records the CPU its int8 gate ran
on, and :func:`portability_warning` says when a bundle is served on a CPU of the other kind.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["int8_cpu", "int8_cpu_from_flags", "portability_warning"]

_X86 = {"x86_64", "amd64", "i386", "i686"}


def int8_cpu_from_flags(flags: set[str], machine: str = "x86_64") -> dict[str, Any]:
    """``{"isa": ..., "u8s8_saturates": ...}`` from a CPU's ``/proc/cpuinfo`` flags and ``platform.machine()``.

    ``isa`` is the best int8 path onnxruntime takes: ``amx``, ``avx512-vnni``, ``avx-vnni``, ``avx512``,
    ``avx2``, ``sse`` on x86-64, else the machine name (Arm: exact dot products).
    """
    if machine.lower() not in _X86:
        return {"isa": machine.lower(), "u8s8_saturates": False}
    for isa, flag in (("amx", "amx_int8"), ("avx512-vnni", "avx512_vnni"), ("avx-vnni", "avx_vnni")):
        if flag in flags:
            return {"isa": isa, "u8s8_saturates": False}
    isa = "avx512" if "avx512bw" in flags else "avx2" if "avx2" in flags else "sse"
    return {"isa": isa, "u8s8_saturates": True}


@lru_cache(maxsize=1)
def int8_cpu() -> dict[str, Any]:
    """This machine's :func:`int8_cpu_from_flags` (Linux: read from ``/proc/cpuinfo``; elsewhere: unknown)."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"isa": "unknown", "u8s8_saturates": None}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    return int8_cpu_from_flags(set(flags), machine)


def portability_warning(recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None = None) -> str | None:
    """A sentence when an int8 graph gated on a CPU of one kind (exact or saturating int8 sums) runs on
    the other kind, else None (also when either side is unknown: bundles exported before this was recorded)."""
    here = int8_cpu() if current is None else current
    if not recorded or recorded.get("u8s8_saturates") is None or here.get("u8s8_saturates") is None:
        return None
    if bool(recorded["u8s8_saturates"]) == bool(here["u8s8_saturates"]):
        return None
    how = ("without VNNI: its int8 products saturate in pairs" if here["u8s8_saturates"]
           else "with exact int8 sums")
    return (f"the int8 graph's agreement gate ran on a {recorded.get('isa')} CPU; this one is {here.get('isa')} "
            f"({how}), so int8 outputs differ slightly from what the gate measured (on BANKING77 MiniLM 99.45 % vs "
            "98.99 % top-1 agreement with fp32). Serve with --precision fp32, or re-export on this machine.")
