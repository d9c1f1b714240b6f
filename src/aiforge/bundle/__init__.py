"""Bundles, the Registry and the torch-free Runtime.

Importing this package must never import torch: a server loads bundles with onnxruntime,
numpy and tokenizers only. Its names load on first use, so ``import aiforge.bundle.format`` (the
manifest, what ``aiforge serve`` reads first) imports neither numpy nor the export code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiforge.bundle.format import (
        FORMAT_VERSION,
        BundleCheck,
        BundleManifest,
        read_manifest,
        verify_bundle,
        write_manifest,
    )
    from aiforge.bundle.parts import BundleParts, ExportResult, Int8Parity, Parity, export_bundle
    from aiforge.bundle.registry import BundleRecord, RegisteredBundle, Registry, default_home, verify
    from aiforge.bundle.runtime import Prediction, Runtime

__all__ = [
    "FORMAT_VERSION",
    "BundleCheck",
    "BundleManifest",
    "BundleParts",
    "BundleRecord",
    "ExportResult",
    "Int8Parity",
    "Parity",
    "Prediction",
    "RegisteredBundle",
    "Registry",
    "Runtime",
    "default_home",
    "export_bundle",
    "read_manifest",
    "verify",
    "verify_bundle",
    "write_manifest",
]

_WHERE = {
    **dict.fromkeys(("FORMAT_VERSION", "BundleCheck", "BundleManifest", "read_manifest", "verify_bundle",
                     "write_manifest"), "format"),
    **dict.fromkeys(("BundleParts", "ExportResult", "Int8Parity", "Parity", "export_bundle"), "parts"),
    **dict.fromkeys(("BundleRecord", "RegisteredBundle", "Registry", "default_home", "verify"), "registry"),
    **dict.fromkeys(("Prediction", "Runtime"), "runtime"),
}


def __getattr__(name: str) -> object:
    """Names load on first use: the server reads a manifest before it needs numpy (``aiforge serve``)."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"aiforge.bundle.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'aiforge.bundle' has no attribute {name!r}")
