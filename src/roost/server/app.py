"""The aiohttp application: the Phoenix socket, the chat page, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ..channels import Endpoint
from ..channels.socket import CLOSE_RESTART
from .websocket import ENDPOINT_KEY, websocket_handler

STATIC = Path(__file__).resolve().parent.parent / "chat" / "static"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    endpoint = request.app[ENDPOINT_KEY]
    body: dict[str, object] = {"status": "ok", "node": endpoint.node}
    stats = getattr(endpoint.pubsub.broker, "stats", None)
    if stats is not None:
        body["broker"] = stats.as_dict()
    body["sockets"] = len(endpoint.sockets)
    return web.json_response(body)


def build_app(endpoint: Endpoint, *, mount: str = "/socket") -> web.Application:
    """An aiohttp Application serving ``endpoint`` at ``<mount>/websocket``."""
    app = web.Application()
    app[ENDPOINT_KEY] = endpoint
    app.router.add_get(f"{mount}/websocket", websocket_handler)
    app.router.add_get("/", index)
    app.router.add_get("/rooms/{name}", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC, show_index=False)

    async def pubsub_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await endpoint.start()
        yield
        await endpoint.stop()

    async def close_sockets(app: web.Application) -> None:
        for socket in list(endpoint.sockets):
            socket.wire.close(CLOSE_RESTART, "server restart")

    app.cleanup_ctx.append(pubsub_lifecycle)
    app.on_shutdown.append(close_sockets)
    return app
