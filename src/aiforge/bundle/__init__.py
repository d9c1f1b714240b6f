"""Bundles, the Registry and the torch-free Runtime.

Importing this package must never import torch: a server loads bundles with onnxruntime,
numpy and tokenizers only.
"""

from aiforge.bundle.format import FORMAT_VERSION, BundleManifest, read_manifest, write_manifest
from aiforge.bundle.parts import BundleParts, ExportResult, Int8Parity, Parity, export_bundle
from aiforge.bundle.registry import BundleRecord, RegisteredBundle, Registry, default_home
from aiforge.bundle.runtime import Prediction, Runtime

__all__ = [
    "FORMAT_VERSION",
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
    "write_manifest",
]
