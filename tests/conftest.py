"""Shared fixtures: a real `roost serve` subprocess and an in-process server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roost.brokers.memory import MemoryBroker
from roost.channels import Endpoint, Limits, Router
from roost.chat import create_endpoint
from roost.server import build_app
from roost.server.front import FrontSite

from support import ServerProcess, free_port, start_server


@pytest.fixture(scope="module")
def roost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `roost serve --echo` node in a subprocess, shared by a test module."""
    server = start_server("--echo", log_dir=tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


class LocalServer:
    """A server for an Endpoint, run in the test's own event loop: the front listener
    as ``roost serve`` runs it (``lean=False``: aiohttp's own TCPSite, so upgrades take
    the aiohttp WebSocket route)."""

    def __init__(self, endpoint: Endpoint, lean: bool = True) -> None:
        self.endpoint = endpoint
        self.lean = lean
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LocalServer:
        self.runner = web.AppRunner(
            build_app(self.endpoint), handle_signals=False, shutdown_timeout=1.0
        )
        await self.runner.setup()
        if self.lean:
            await FrontSite(self.runner, "127.0.0.1", self.port).start()
        else:
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def local_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await local_server(endpoint=None, **limits)`` → a started LocalServer."""
    started: list[LocalServer] = []

    async def make(
        endpoint: Endpoint | None = None, lean: bool = True, **limits: Any
    ) -> LocalServer:
        if endpoint is None:
            endpoint = create_endpoint("local", MemoryBroker(), echo=True, limits=Limits(**limits))
        server = await LocalServer(endpoint, lean).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


__all__ = ["LocalServer", "Router"]


@pytest.fixture
def redis_server() -> Iterator[Any]:
    """A private redis-server for one test (killed afterwards)."""
    from support import start_redis

    server = start_redis()
    yield server
    server.stop()
