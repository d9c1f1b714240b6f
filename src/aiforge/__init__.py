"""aiforge: pre-trained models to fast, fair, deployed AI applications.

>>> import aiforge as af
>>> app = af.App.from_yaml("examples/banking77/aiforge.yaml")   # doctest: +SKIP
>>> app.fit(); app.export()                                       # doctest: +SKIP
>>> af.load("banking77").predict(["I still have not received my card"])  # doctest: +SKIP

Importing aiforge does not import torch; training does, on first use.
"""

from typing import TYPE_CHECKING

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
from aiforge.version import __version__

if TYPE_CHECKING:
    from aiforge.app import App, ExportResult, evaluate, load, predict_file, serve
    from aiforge.bundle import Registry, Runtime, verify
    from aiforge.scale.batch import batch
    from aiforge.serve.app import create_app
    from aiforge.serve.client import Client
    from aiforge.serve.config import ServerConfig
    from aiforge.tasks.registry import get_kind as get_kind
    from aiforge.tasks.registry import resolve as resolve

# Everything else loads on first use: ``import aiforge.<anything>`` runs this file, and the server's
# start-up (``aiforge serve``) must not pay for the training API, the spec loader or the audit.
_LAZY = {"App": "aiforge.app", "ExportResult": "aiforge.app", "evaluate": "aiforge.app", "load": "aiforge.app",
         "predict_file": "aiforge.app", "Registry": "aiforge.bundle", "Runtime": "aiforge.bundle",
         "verify": "aiforge.bundle", "get_kind": "aiforge.tasks.registry", "resolve": "aiforge.tasks.registry",
         "serve": "aiforge.app", "batch": "aiforge.scale.batch",
         "create_app": "aiforge.serve.app", "Client": "aiforge.serve.client",
         "ServerConfig": "aiforge.serve.config"}


def __getattr__(name: str) -> object:
    """Names other than the errors load on first use, so ``import aiforge`` stays light."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "AppSpec":  # the text kind's spec, through the kinds table like every kind's part
        registry = importlib.import_module("aiforge.tasks.registry")
        return registry.resolve(registry.get_kind("text-classification").spec)
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
