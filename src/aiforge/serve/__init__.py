"""Serving: app factory, dynamic batcher, protocol routers, auth, metrics, client."""

from aiforge.serve.app import create_app, serve
from aiforge.serve.batching import Batcher, Overloaded
from aiforge.serve.client import Client
from aiforge.serve.config import ServerConfig

__all__ = ["Batcher", "Client", "Overloaded", "ServerConfig", "create_app", "serve"]
