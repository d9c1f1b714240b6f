"""Bundles, the Registry and the torch-free Runtime.

Importing this package must never import torch: a server loads bundles with onnxruntime,
numpy and tokenizers only.
"""

from aiforge.bundle.format import FORMAT_VERSION, BundleManifest, read_manifest, write_manifest
from aiforge.bundle.registry import BundleRecord, Registry, default_home
from aiforge.bundle.runtime import Prediction, Runtime

__all__ = [
    "FORMAT_VERSION",
    "BundleManifest",
    "BundleRecord",
    "Prediction",
    "Registry",
    "Runtime",
    "default_home",
    "read_manifest",
    "write_manifest",
]
