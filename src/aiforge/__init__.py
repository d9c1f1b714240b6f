"""aiforge: pre-trained models to fast, fair, deployed AI applications.

>>> import aiforge as af
>>> app = af.App.from_yaml("examples/banking77/aiforge.yaml")   # doctest: +SKIP
>>> app.fit(); app.export()                                       # doctest: +SKIP
>>> af.load("banking77").predict(["I still have not received my card"])  # doctest: +SKIP

Importing aiforge does not import torch; training does, on first use.
"""

from aiforge.app import App, ExportResult, __version__, evaluate, load, predict_file, serve
from aiforge.bundle import Registry, Runtime, verify
from aiforge.errors import (
    AiforgeError,
    BackboneError,
    BundleError,
    ChecksumError,
    DataError,
    ExportError,
    GenerationError,
    InputError,
    RegistryError,
    ServerError,
    SpecError,
    UnknownItem,
)
from aiforge.tasks.registry import get_kind, resolve

_LAZY = {"batch": "aiforge.scale.batch", "create_app": "aiforge.serve.app", "Client": "aiforge.serve.client",
         "ServerConfig": "aiforge.serve.config"}


def __getattr__(name: str) -> object:
    """Serving names and the text kind's spec load on first use, so ``import aiforge`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "AppSpec":  # the text kind's spec, through the kinds table like every kind's part

        return resolve(get_kind("text-classification").spec)
    raise AttributeError(f"module 'aiforge' has no attribute {name!r}")

__all__ = [
    "AiforgeError",
    "App",
    "AppSpec",
    "BackboneError",
    "BundleError",
    "ChecksumError",
    "Client",
    "DataError",
    "ExportError",
    "ExportResult",
    "GenerationError",
    "InputError",
    "Registry",
    "RegistryError",
    "Runtime",
    "ServerConfig",
    "ServerError",
    "SpecError",
    "UnknownItem",
    "__version__",
    "batch",
    "create_app",
    "evaluate",
    "load",
    "predict_file",
    "serve",
    "verify",
]
