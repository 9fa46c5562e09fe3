"""The aiohttp server: WebSocket transport, chat page, health endpoints."""

from .app import build_app

__all__ = ["build_app"]
