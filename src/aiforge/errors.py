"""One exception family for everything aiforge tells a user.

::

    AiforgeError                 base; the CLI prints str(exc) on one line, no traceback
    ├── SpecError                aiforge.yaml: unknown key, wrong type, bad value
    ├── DataError                a data file: missing, unreadable, missing column, bad rows
    ├── BackboneError            hub: unknown backbone, package not installed
    ├── BundleError              bundle folder: missing file, checksum mismatch, bad format
    │   └── ChecksumError        a file's sha256 differs from the manifest
    ├── RegistryError            registry: unknown name or version
    ├── ExportError              ONNX export or quantization failed a parity check
    ├── InputError               a prediction input of the wrong shape or type
    │   └── UnknownItem          an item id a recommendation model's catalogue lacks (HTTP 404)
    ├── GenerationError          a chat backend failed: upstream down or refusing, local model error
    └── ServerError              an aiforge (or any v2) server answered an error status; keeps ``status``

Third-party errors are converted where they enter aiforge, ``raise X(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "AiforgeError",
    "BackboneError",
    "BundleError",
    "ChecksumError",
    "DataError",
    "ExportError",
    "GenerationError",
    "InputError",
    "RegistryError",
    "ServerError",
    "SpecError",
    "UnknownItem",
]


class AiforgeError(Exception):
    """Base of every error aiforge raises on purpose; its message is for a person."""


class SpecError(AiforgeError):
    """An app spec (aiforge.yaml) is invalid."""


class DataError(AiforgeError):
    """A data file is missing, unreadable, or breaks a check."""


class BackboneError(AiforgeError):
    """A hub backbone is unknown or its package is missing."""


class BundleError(AiforgeError):
    """A bundle folder is incomplete, corrupt, or of an unknown format."""


class ChecksumError(BundleError):
    """A bundle file does not match the sha256 recorded in its manifest."""


class RegistryError(AiforgeError):
    """A registry lookup failed (unknown name or version)."""


class ExportError(AiforgeError):
    """Export or quantization failed, or a parity check did not hold."""


class InputError(AiforgeError):
    """Inputs to predict() are not what the model takes."""


class UnknownItem(InputError):
    """An item id the model's catalogue does not hold (servers answer 404, not 422)."""


class GenerationError(AiforgeError):
    """The generation backend failed (upstream unreachable, bad reply, model missing)."""


class ServerError(AiforgeError):
    """A server answered with an error status; ``status`` holds it, the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status
