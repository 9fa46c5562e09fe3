"""The aiohttp application: the Phoenix socket, the chat page, health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from ..channels import Endpoint
from ..security.lptoken import SessionTokens
from . import api
from .admission import BUCKETS_KEY, ENDPOINT_KEY, carry_retry_after, client_buckets
from .api import API_KEY, MAX_BODY
from .balance import BalancePolicy
from .balance import for_endpoint as balancer_for
from .drain import drain, settle
from .front import WS_PATH_KEY
from .idle import IDLE_KEY, IdleWheel
from .longpoll import LONGPOLL_KEY, LongPollManager, longpoll_get, longpoll_post
from .metrics import Metrics
from .siblings import Siblings
from .siblings import attach as attach_siblings
from .websocket import FLUSHER_KEY, websocket_handler
from .wswire import Flusher

STATIC = Path(__file__).resolve().parent.parent / "chat" / "static"
#: The dashboard's page (roost/admin/static), served only with ``admin``; its client
#: (roost.js and its modules, base.css) comes from the chat's directory at /admin/lib/,
#: whatever the application's own static directory is.
ADMIN_STATIC = Path(__file__).resolve().parent.parent / "admin" / "static"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
}


def _index(page: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    return index


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: nosniff; every HTML page (``/``, ``/static/index.html``, any other
    route to it): the page's CSP, no framing, no referrer."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "text/html":
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)


async def readyz(request: web.Request) -> web.Response:
    """Ready: accepting sockets and the broker connected; not while draining."""
    endpoint = request.app[ENDPOINT_KEY]
    broker_ok = endpoint.pubsub.broker.connected
    ready = broker_ok and not endpoint.draining
    body = {"ready": ready, "broker": broker_ok, "draining": endpoint.draining}
    return web.json_response(body, status=200 if ready else 503)


async def healthz(request: web.Request) -> web.Response:
    endpoint = request.app[ENDPOINT_KEY]
    body: dict[str, object] = {"status": "ok", "node": endpoint.node}
    health = endpoint.pubsub.broker.health()
    if health is not None:
        body["broker"] = health
    body["sockets"] = len(endpoint.sockets)
    return web.json_response(body)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``Server: roost`` — no Python or aiohttp version for a scanner to match."""
    response.headers["Server"] = "roost"


EndpointHook = Callable[[Endpoint], Awaitable[None]]


def _signal(hook: EndpointHook, endpoint: Endpoint) -> Callable[[web.Application], Awaitable[None]]:
    async def run(app: web.Application) -> None:
        await hook(endpoint)

    return run


def build_app(
    endpoint: Endpoint,
    *,
    mount: str = "/socket",
    api_key: str | None = None,
    drain_window: float = 5.0,
    longpoll_window: float = 10.0,
    longpoll_key: bytes | None = None,
    siblings: Siblings | None = None,
    balance: BalancePolicy | None = None,
    static: Path | None = STATIC,
    pages: tuple[str, ...] = ("/", "/rooms/{name}"),
    on_start: Sequence[EndpointHook] = (),
    on_stop: Sequence[EndpointHook] = (),
    admin: bool = False,
) -> web.Application:
    """An aiohttp Application serving ``endpoint`` at ``<mount>/websocket``.

    ``api_key`` enables ``POST /api/broadcast``; ``drain_window`` spreads the
    1012 closes on shutdown; ``longpoll_key`` signs long-poll session tokens (the
    same on every node; None: a random key of this process, see security/lptoken.py);
    ``siblings``: this process is one worker of a group, and ``/metrics`` and
    ``/readyz`` answer for every worker (see siblings.py); ``balance``: with
    ``siblings``, hand sockets back to the group when far above its share (balance.py);
    ``static``: the directory
    served at ``/static/`` (the chat's by default; None: no page), its ``index.html``
    at each of ``pages``; ``on_start``/``on_stop``: the application's hooks, run once
    the endpoint is up, and after the drain; ``admin``: serve the live dashboard's page
    at ``/admin`` (roost/admin; False: ``/admin`` is 404).
    """
    app = web.Application(client_max_size=MAX_BODY)
    app.on_response_prepare.append(_server_header)
    app.on_response_prepare.append(_security_headers)
    app.on_response_prepare.append(carry_retry_after)
    app[ENDPOINT_KEY] = endpoint
    app[FLUSHER_KEY] = Flusher()
    app[IDLE_KEY] = IdleWheel(endpoint.limits.idle_timeout)
    app[BUCKETS_KEY] = client_buckets(endpoint)
    app[WS_PATH_KEY] = f"{mount}/websocket"
    app.router.add_get(f"{mount}/websocket", websocket_handler)
    longpoll = LongPollManager(endpoint, longpoll_window, SessionTokens(longpoll_key))
    app[LONGPOLL_KEY] = longpoll
    app.router.add_get(f"{mount}/longpoll", longpoll_get)
    app.router.add_post(f"{mount}/longpoll", longpoll_post)
    if static is not None and (static / "index.html").is_file():
        for page in pages:
            app.router.add_get(page, _index(static / "index.html"))
    app.router.add_get("/healthz", healthz)
    if siblings is None:
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", Metrics(endpoint).handle)
    else:
        attach_siblings(app, siblings, Metrics(endpoint).handle, readyz)
    if api_key:
        app[API_KEY] = api_key
        app.router.add_post("/api/broadcast", api.broadcast)
    if static is not None:
        app.router.add_static("/static/", static, show_index=False)
    if admin:
        app.router.add_get("/admin", _index(ADMIN_STATIC / "index.html"))
        app.router.add_static("/admin/static/", ADMIN_STATIC, show_index=False)
        app.router.add_static("/admin/lib/", STATIC, show_index=False)

    async def pubsub_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await endpoint.start()
        await longpoll.start()
        yield
        await longpoll.stop()
        # Connections lost after the drain (during aiohttp's shutdown) close their
        # Sockets in tasks of their own: their untracks and unsubscribes go before the
        # presence store and the broker stop (bounded, see drain.settle).
        await settle(endpoint, sockets=False)
        await endpoint.stop()

    async def close_sockets(app: web.Application) -> None:
        await drain(endpoint, drain_window)

    app.cleanup_ctx.append(pubsub_lifecycle)  # (runs first of the startup signal)
    if siblings is not None and balance is not None and siblings.count > 1:
        balancer = balancer_for(endpoint, siblings, balance)

        async def start_balancer(app: web.Application) -> None:
            balancer.start()

        async def stop_balancer(app: web.Application) -> None:
            await balancer.stop()

        app.on_startup.append(start_balancer)
        app.on_shutdown.append(stop_balancer)  # before the drain
    app.on_shutdown.append(close_sockets)
    app.on_startup.extend(_signal(hook, endpoint) for hook in on_start)
    app.on_shutdown.extend(_signal(hook, endpoint) for hook in on_stop)
    return app
