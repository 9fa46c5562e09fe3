"""The node's listener: WebSocket upgrades handled here, every other request by aiohttp.

Each accepted connection starts with a ``Front`` protocol. It looks at the first bytes:
anything but ``GET <mount>/websocket`` goes to aiohttp at once (its RequestHandler takes
the transport and the bytes read so far: pages, API, long-poll, /metrics, keep-alive
all work as before). For the WebSocket path it reads the head (at most ``MAX_HEAD``
bytes -> 431; at most ``head_timeout`` seconds -> 408), and an upgrade it can parse
strictly it answers itself: the same token, key/version and admission checks as the
aiohttp route (``websocket.py``), with the same statuses and bodies; then the
transport's protocol becomes a lean ``WsConn``. A head it does not accept (odd
headers, no ``Upgrade``, a body) also goes to aiohttp, which answers as it always has.

Lifecycle of a Front:

| state     | event                              | next                                  |
|-----------|------------------------------------|---------------------------------------|
| head      | first bytes, node past capacity    | 503 + jittered Retry-After, closed    |
| head      | bytes not a WebSocket request line | handed to aiohttp                     |
| head      | head complete, lean upgrade        | admitting (reading paused past bound) |
| head      | head complete, anything else       | handed to aiohttp                     |
| head      | > MAX_HEAD / head_timeout          | 431 / 408, closed                     |
| admitting | refused                            | refusal sent, closed                  |
| admitting | admitted                           | 101 sent, transport -> WsConn         |
| any       | connection_lost                    | gone (no Socket made)                 |
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.tcp_helpers import tcp_nodelay

from ..channels import Endpoint, Socket
from ..protocol.close import CLOSE_RESTART
from .admission import ENDPOINT_KEY, admit, client_of
from .handshake import (
    HandshakeRequest,
    Head,
    check_key,
    is_upgrade,
    parse_head,
    refusal,
    response,
    switching,
)
from .idle import IDLE_KEY, IdleWheel
from .shedding import Shedder
from .websocket import FLUSHER_KEY, BadToken, subprotocol_token
from .wsconn import WsConn
from .wswire import WS_KINDS, Flusher, WsWire

log = logging.getLogger("roost.front")

MAX_HEAD = 16 * 1024  # request head of a WebSocket upgrade: more is 431
HEAD_TIMEOUT = 10.0  # seconds to send that head: slower is 408
WS_PATH_KEY: web.AppKey[str] = web.AppKey("ws_path", str)
_TASKS: set[asyncio.Task[None]] = set()


class FrontContext:
    """What every Front of one listener shares."""

    __slots__ = (
        "app", "endpoint", "flusher", "head_timeout", "prefix", "server", "shedder", "wheel",
    )  # fmt: skip

    def __init__(
        self, app: web.Application, server: web.Server, head_timeout: float, shedder: Shedder
    ) -> None:
        self.app = app
        self.server = server
        self.endpoint: Endpoint = app[ENDPOINT_KEY]
        self.shedder = shedder
        self.flusher: Flusher = app[FLUSHER_KEY]
        self.prefix = b"GET " + app[WS_PATH_KEY].encode()
        self.head_timeout = head_timeout
        self.wheel: IdleWheel = app[IDLE_KEY]


class Front(asyncio.Protocol):
    __slots__ = ("buf", "ctx", "lost", "timer", "transport")

    def __init__(self, ctx: FrontContext) -> None:
        self.ctx = ctx
        self.buf = b""
        self.lost = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tcp_nodelay(transport, True)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.ctx.head_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_timer()

    def data_received(self, data: bytes) -> None:
        if not self.buf and self.timer is not None and data.startswith(self.ctx.prefix[:5]):
            shedder = self.ctx.shedder
            if shedder.why() is not None:  # past capacity: refused before any parsing
                shedder.shed += 1
                self.ctx.endpoint.stats.shed += 1
                after = shedder.retry_after()
                self._answer(response(503, "over capacity\n", {"Retry-After": after}))
                return
        buf = self.buf = self.buf + data
        if self.timer is None:  # admitting: keep what comes, read no further past a bound
            if len(buf) > MAX_HEAD:
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        prefix = self.ctx.prefix
        n = min(len(buf), len(prefix) + 1)
        if buf[: len(prefix)] != prefix[:n] or (n > len(prefix) and buf[n - 1] not in b" ?"):
            self._handoff()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._answer(response(431, "request header fields too large\n"))
            return
        if end > MAX_HEAD:
            self._answer(response(431, "request header fields too large\n"))
            return
        head = parse_head(buf[:end])
        if head is None or head.path != prefix[4:].decode() or not is_upgrade(head.headers):
            self._handoff()
            return
        self._stop_timer()
        self.buf = buf[end + 4 :]
        task = asyncio.get_running_loop().create_task(self._guarded(head))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        self.timer = None
        log.info("request head not complete after %.1fs: closing", self.ctx.head_timeout)
        self._answer(response(408, "request timeout\n"))

    def _answer(self, data: bytes) -> None:
        self._stop_timer()
        transport = self.transport
        assert transport is not None
        if not transport.is_closing():
            transport.write(data)
            transport.close()

    def _handoff(self) -> None:
        """aiohttp takes the connection and the bytes read so far."""
        self._stop_timer()
        transport = self.transport
        assert transport is not None
        handler = self.ctx.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        buf, self.buf = self.buf, b""
        if buf:
            handler.data_received(buf)

    async def _guarded(self, head: Head) -> None:
        """The upgrade; a bug or a raising connect hook is a 500, as on aiohttp's route."""
        shedder = self.ctx.shedder
        shedder.handshakes += 1
        try:
            await self._upgrade(head)
        except Exception:
            log.exception("WebSocket upgrade failed")
            self._answer(response(500, "internal error\n"))
        finally:
            shedder.handshakes -= 1

    async def _upgrade(self, head: Head) -> None:
        transport = self.transport
        assert transport is not None
        ctx = self.ctx
        headers = head.headers
        try:
            token, has_phoenix = subprotocol_token(headers.get("Sec-WebSocket-Protocol", ""))
        except BadToken as exc:
            self._answer(response(403, f"{exc}\n"))
            return
        accept, bad = check_key(headers)
        if accept is None:
            self._answer(response(400, bad or ""))
            return
        endpoint = ctx.endpoint
        request = HandshakeRequest(ctx.app, head, transport.get_extra_info("peername"))
        admitted = await admit(request, endpoint, dict(request.query), token, "websocket")
        if isinstance(admitted, web.Response):
            self._answer(refusal(admitted))
            return
        if self.lost or transport.is_closing():  # the client went away meanwhile
            return
        serializer, assigns = admitted
        limits = endpoint.limits
        stats = endpoint.stats
        wire = WsWire(WS_KINDS[serializer.vsn], transport, limits.max_buffer, stats, ctx.flusher)
        stats.connections_total += 1
        socket = Socket(endpoint, wire, assigns, client_of(request))
        endpoint.sockets.add(socket)
        conn = WsConn(socket, wire, ctx.wheel, limits.max_frame)
        transport.write(switching(accept, has_phoenix))
        transport.set_protocol(conn)
        if endpoint.draining:  # upgraded after the drain began: the drain's close, at once
            wire.close(CLOSE_RESTART, "server restart")
            return
        rest, self.buf = self.buf, b""
        if len(rest) > MAX_HEAD:
            transport.resume_reading()
        if rest:
            conn.data_received(rest)


class FrontSite(web.BaseSite):
    """A TCP site whose connections start with a Front (``reuse_port``; or an inherited
    listening ``sock``)."""

    __slots__ = ("_head_timeout", "_host", "_port", "_reuse_port", "_shedder", "_sock")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int,
        *,
        reuse_port: bool = False,
        sock: Any = None,
        head_timeout: float = HEAD_TIMEOUT,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._sock = sock
        self._head_timeout = head_timeout
        self._shedder: Shedder | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def stop(self) -> None:
        if self._shedder is not None:
            await self._shedder.stop()
        await super().stop()

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        limits = runner.app[ENDPOINT_KEY].limits
        self._shedder = Shedder(max_handshakes=limits.handshakes_in_flight, max_lag=limits.shed_lag)
        ctx = FrontContext(runner.app, runner.server, self._head_timeout, self._shedder)
        self._shedder.start()
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(lambda: Front(ctx), sock=self._sock)
        else:
            self._server = await loop.create_server(
                lambda: Front(ctx),
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_port=self._reuse_port or None,
            )
