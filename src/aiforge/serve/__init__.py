"""Serving: app factory, dynamic batcher, protocol routers, auth, metrics, client."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiforge.serve.app import create_app, serve
    from aiforge.serve.batching import Batcher, Overloaded
    from aiforge.serve.client import Client
    from aiforge.serve.config import ServerConfig

__all__ = ["Batcher", "Client", "Overloaded", "ServerConfig", "create_app", "serve"]

_WHERE = {"create_app": "app", "serve": "app", "Batcher": "batching", "Overloaded": "batching", "Client": "client",
          "ServerConfig": "config"}


def __getattr__(name: str) -> object:
    """Names load on first use: the server's start-up must not import the client (httpx)."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"aiforge.serve.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'aiforge.serve' has no attribute {name!r}")
