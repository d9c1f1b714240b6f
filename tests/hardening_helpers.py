"""A real uvicorn server in a thread of the test process, configured exactly as ``aiforge serve`` configures it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from aiforge.serve.config import ServerConfig
from aiforge.serve.connections import uvicorn_settings
from aiforge.serve.loadgen import free_port

__all__ = ["ThreadServer", "thread_server"]


@dataclass(frozen=True)
class ThreadServer:
    port: int
    app: FastAPI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def thread_server(app: FastAPI, config: ServerConfig, *, ready_timeout: float = 120.0) -> Iterator[ThreadServer]:
    """Serve ``app`` on a free loopback port with ``config``'s uvicorn settings until the block ends."""
    port = free_port()
    settings = {**uvicorn_settings(config.model_copy(update={"host": "127.0.0.1", "port": port})),
                "timeout_graceful_shutdown": 5}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **settings))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"test server on port {port} not ready within {ready_timeout:g} s")
        time.sleep(0.02)
    try:
        yield ThreadServer(port=port, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
