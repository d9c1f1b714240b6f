"""The CPU an int8 gate ran on (bundle/cpu.py): recorded at export, compared when a bundle is loaded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from aiforge.bundle import Int8Parity, Parity
from aiforge.bundle.cpu import int8_cpu, int8_cpu_from_flags, portability_warning

EXACT = {"isa": "avx512-vnni", "u8s8_saturates": False}
SATURATING = {"isa": "avx2", "u8s8_saturates": True}


@pytest.mark.parametrize(("flags", "machine", "isa", "saturates"), [
    ({"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, "x86_64", "amx", False),
    ({"avx2", "avx512bw", "avx512_vnni"}, "x86_64", "avx512-vnni", False),
    ({"avx2", "avx_vnni"}, "x86_64", "avx-vnni", False),
    ({"avx2", "avx512bw"}, "x86_64", "avx512", True),
    ({"avx2", "fma"}, "x86_64", "avx2", True),  # the AMD EPYC of bench/results/optimize.json cpu_portability
    ({"sse4_2"}, "x86_64", "sse", True),
    ({"asimd", "asimddp"}, "aarch64", "aarch64", False),
])
def test_int8_path_from_cpu_flags(flags: set[str], machine: str, isa: str, saturates: bool) -> None:
    assert int8_cpu_from_flags(flags, machine) == {"isa": isa, "u8s8_saturates": saturates}


def test_this_machine_is_read_from_proc_cpuinfo() -> None:
    here = int8_cpu()
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    assert here["u8s8_saturates"] is (not flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def test_warning_only_when_the_kinds_differ() -> None:
    assert portability_warning(EXACT, dict(EXACT, isa="amx")) is None
    assert portability_warning(SATURATING, SATURATING) is None
    assert portability_warning(None, SATURATING) is None  # exported before the CPU was recorded
    assert portability_warning({"isa": "unknown", "u8s8_saturates": None}, SATURATING) is None
    served_on_avx2 = portability_warning(EXACT, SATURATING)
    assert served_on_avx2 is not None and "avx512-vnni" in served_on_avx2 and "saturate" in served_on_avx2
    assert "--precision fp32" in served_on_avx2
    served_on_vnni = portability_warning(SATURATING, EXACT)
    assert served_on_vnni is not None and "exact" in served_on_vnni


def test_the_gate_cpu_is_stored_and_read_back() -> None:
    parity = Parity(samples=8, max_abs_diff=1e-6, int8=Int8Parity(ok=True, top1_agreement=0.995, min_agreement=0.99,
                                                                  accuracy=None, recipe="r"))
    stored = parity.to_dict()
    assert stored["int8_cpu"] == int8_cpu()
    back = Parity.from_dict(stored, diff_key="max_abs_diff")
    assert back.int8 is not None and back.int8.cpu == int8_cpu() and "cpu" not in back.int8.details
    old = {k: v for k, v in stored.items() if k != "int8_cpu"}  # a bundle exported before: no record, no guess
    old_int8 = Parity.from_dict(old, diff_key="max_abs_diff").int8
    assert old_int8 is not None and old_int8.cpu is None and "int8_cpu" not in Parity.from_dict(
        old, diff_key="max_abs_diff").to_dict()


def test_loading_an_int8_bundle_gated_on_the_other_kind_of_cpu_logs_why(
        trained_bundle: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from aiforge.bundle import cpu
    from aiforge.bundle.format import read_manifest
    from aiforge.bundle.runtime import Runtime

    text_bundle = Path(trained_bundle.export.path)
    recorded = read_manifest(text_bundle).extra["parity"]["int8_cpu"]
    assert recorded == int8_cpu()
    sums = "saturate in pairs" if recorded["u8s8_saturates"] else "are exact"
    assert f"measured on a CPU whose int8 sums {sums} ({recorded['isa']})" in (text_bundle / "card.md").read_text()
    with caplog.at_level(logging.WARNING, logger="aiforge.runtime"):
        Runtime.load(text_bundle, precision="int8")
    assert not caplog.records  # gated on this machine
    other = {"isa": "other", "u8s8_saturates": not recorded["u8s8_saturates"]}
    monkeypatch.setattr(cpu, "int8_cpu", lambda: other)
    with caplog.at_level(logging.WARNING, logger="aiforge.runtime"):
        Runtime.load(text_bundle, precision="int8")
        Runtime.load(text_bundle, precision="fp32")
    assert len(caplog.records) == 1 and "agreement gate ran on" in caplog.records[0].getMessage()
