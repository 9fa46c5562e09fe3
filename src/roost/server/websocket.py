"""``GET /socket/websocket`` on aiohttp: the upgrades the front listener leaves to aiohttp.

``roost serve`` answers WebSocket upgrades itself (front.py, wsconn.py); this route serves
an upgrade on a keep-alive connection that began with another request, a head the
front does not parse, and in-process tests. Both paths share the token, admission and
message handling (``subprotocol_token``, ``admit``, ``handle_one``).
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

from aiohttp import WSMsgType, web

from ..channels import Socket
from ..protocol import BINARY, TEXT
from ..protocol.close import CLOSE_TOO_BIG
from .admission import ENDPOINT_KEY, admit, client_of
from .idle import IDLE_KEY, IdleWheel
from .wsconn import handle_one
from .wswire import WS_KINDS, Flusher, WsWire

log = logging.getLogger("roost.websocket")

TOKEN_PREFIX = "base64url.bearer.phx."
BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
FLUSHER_KEY: web.AppKey[Flusher] = web.AppKey("flusher", Flusher)


class BadToken(ValueError):
    """A ``base64url.bearer.phx.`` subprotocol whose token is not base64url UTF-8 (HTTP 403)."""


def subprotocol_token(header: str) -> tuple[str | None, bool]:
    """The auth token a client sent in Sec-WebSocket-Protocol (phoenix.js ``authToken``).

    A token that was sent must be valid: one that does not decode raises BadToken
    (refused with 403) rather than passing as no token at all.
    """
    token = None
    has_phoenix = False
    for item in header.split(","):
        item = item.strip()
        if item == "phoenix":
            has_phoenix = True
        elif item.startswith(TOKEN_PREFIX):
            raw = item[len(TOKEN_PREFIX) :]
            if not BASE64URL.fullmatch(raw):
                raise BadToken("bad token encoding")
            try:
                token = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            except (ValueError, UnicodeError):  # a length of 4n+1, or not UTF-8
                raise BadToken("bad token encoding") from None
    return token, has_phoenix


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    endpoint = request.app[ENDPOINT_KEY]
    try:
        token, has_phoenix = subprotocol_token(request.headers.get("Sec-WebSocket-Protocol", ""))
    except BadToken as exc:
        return web.Response(status=403, text=f"{exc}\n")
    admitted = await admit(request, endpoint, dict(request.query), token, "websocket")
    if isinstance(admitted, web.Response):
        return admitted
    serializer, assigns = admitted

    limits = endpoint.limits
    ws = web.WebSocketResponse(
        protocols=("phoenix",) if has_phoenix else (),
        compress=False,
        max_msg_size=limits.max_frame,
        autoping=True,
        heartbeat=None,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    stats = endpoint.stats
    wire = WsWire(
        WS_KINDS[serializer.vsn], transport, limits.max_buffer, stats, request.app[FLUSHER_KEY]
    )
    stats.connections_total += 1
    socket = Socket(endpoint, wire, assigns, client_of(request))
    endpoint.sockets.add(socket)
    idle = IdleTimer(wire, request.app[IDLE_KEY])
    # The read loop lives here, not in a helper: every idle connection keeps this
    # coroutine suspended, and each extra frame in the chain costs memory.
    try:
        while not wire.closed:
            msg = await ws.receive()
            idle.touch()
            if msg.type is WSMsgType.TEXT:
                opcode, data = TEXT, msg.data
            elif msg.type is WSMsgType.BINARY:
                opcode, data = BINARY, msg.data
            elif msg.type is WSMsgType.ERROR:
                _close_for_error(ws, wire, msg.data)
                break
            else:  # CLOSE, CLOSING, CLOSED
                break
            if not await handle_one(socket, wire, opcode, data):
                break
    finally:
        idle.cancel()
        endpoint.sockets.discard(socket)
        await socket.close()
        wire.closed = True
    return ws


class IdleTimer:
    """The aiohttp route's entry on the app's idle wheel (closes 1001 after silence)."""

    __slots__ = ("last", "tick", "wheel", "wire")

    def __init__(self, wire: Any, wheel: IdleWheel) -> None:
        self.wire = wire
        self.wheel = wheel
        self.last = 0.0
        self.tick = 0
        wheel.add(self)

    def touch(self) -> None:
        self.last = self.wheel.loop.time()

    def idle_close(self, code: int, reason: str) -> None:
        self.wire.give_up(code, reason)

    def cancel(self) -> None:
        self.wheel.remove(self)


def _close_for_error(ws: web.WebSocketResponse, wire: WsWire, exc: object) -> None:
    """aiohttp reports protocol violations (too big, bad UTF-8) as ERROR messages.

    aiohttp has already sent the close frame with the right code (1009, 1007, 1002);
    we only make sure nothing more is written.
    """
    code = getattr(exc, "code", None)
    log.info("websocket closed by protocol error code=%s: %s", code, exc)
    if ws.closed:
        wire.closed = True
    else:
        wire.close(code if isinstance(code, int) else CLOSE_TOO_BIG, str(exc)[:100])
