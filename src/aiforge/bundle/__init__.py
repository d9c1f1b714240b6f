"""Bundles, the Registry and the torch-free Runtime.

Importing this package must never import torch: a server loads bundles with onnxruntime,
numpy and tokenizers only.
"""

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
