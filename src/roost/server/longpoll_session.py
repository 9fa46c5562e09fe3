"""One long-poll session: a Socket's Wire that buffers frames until the next poll.

The session lives on the node that created it (``LongPollManager``, in longpoll.py,
finds it, relays requests for it between nodes and reaps it). A poll takes what is
buffered or waits up to the window; a post hands the body's lines to the Socket as
frames, each at most ``--max-frame`` bytes like a WebSocket frame.

A poll's messages take the shape Phoenix chose by protocol version (phoenix 1.3's
long_poll.ex: vsn 1.x or none → ``LongPollSerializer``, 2.x → ``V2.LongPollSerializer``):
a V1 session gets each message as a JSON object ``{"topic","event","payload","ref"}``
(phoenix.js 1.2 and the ``phoenix-socket`` npm package do ``JSON.stringify(msg)`` on it),
a V2 session as the encoded JSON string (phoenix.js since 1.3 passes it on as it is).

Answers (the JSON body phoenix.js reads; the HTTP status is always 200):

    poll → {"status": 200, messages} | {"status": 204} | {"status": 410} (closed); the
           handler adds the client's token (it never travels between nodes)
    post → {"status": 200} | {"status": 410} (closed, or a line that closed it)
           | {"status": 413} (a line over --max-frame: the session closes with 1009)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..channels import CloseSocket, Endpoint, Socket
from ..protocol import BINARY, TEXT, V1, V2, Encoded, Frame
from ..protocol.close import CLOSE_INVALID, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG
from ..pubsub import WireKind
from ..security.lptoken import proof

log = logging.getLogger("roost.longpoll")


def _text_only(frame: Frame) -> bytes:
    # phoenix.js long-poll reads every message as text: binary frames cannot travel.
    return frame.data if frame.opcode == TEXT else b""


LP_KINDS = {
    V1.vsn: WireKind("lp/v1", V1, _text_only),
    V2.vsn: WireKind("lp/v2", V2, _text_only),
}


def _as_strings(messages: list[str]) -> list[Any]:
    return messages


def _as_objects(messages: list[str]) -> list[Any]:
    return [orjson.loads(message) for message in messages]


#: How a poll carries its messages, by the session's protocol version (see above).
SHAPES: dict[str, Callable[[list[str]], list[Any]]] = {
    V1.vsn: _as_objects,
    V2.vsn: _as_strings,
}


class _Everything(frozenset[str]):
    def __contains__(self, item: object) -> bool:
        return True


EVERYTHING = _Everything({"*"})


class Listener:
    """A PubSub subscriber that hands every broadcast to a callback."""

    intercept: frozenset[str] = EVERYTHING
    wire: Any = None

    def __init__(self, callback: Callable[[str, Encoded], None]) -> None:
        self.callback = callback

    def handle_out(self, event: str, payload: Encoded) -> None:
        self.callback(event, payload)

    def lost(self) -> None:
        """Long-poll's own topics keep no history: they cannot lose continuity."""


def decode_line(line: str) -> tuple[int, bytes]:
    """A body line as a frame: "[" or "{" starts JSON text, anything else is base64
    binary (ValueError when it is not valid base64)."""
    if line[0] in "[{":
        return TEXT, line.encode()
    try:
        return BINARY, base64.b64decode(line, validate=True)
    except binascii.Error as exc:
        raise ValueError("bad base64 line") from exc


class Session:
    def __init__(
        self,
        endpoint: Endpoint,
        forget: Callable[[Session], None],
        sid: str,
        token: str,
        kind: WireKind,
    ) -> None:
        self.endpoint = endpoint
        self.forget = forget  # the manager's: the session is closed
        self.id = sid
        self.token = token
        #: What a relaying node sends instead of the token (see security.lptoken).
        self.proof = proof(token)
        self.kind = kind
        self.shape = SHAPES[kind.serializer.vsn]
        self.messages: list[str] = []
        self.size = 0
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.created = self.last_seen = time.monotonic()
        self.lock = asyncio.Lock()
        self.socket: Socket | None = None

    # -- the Wire interface ------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.messages.append(data.decode())
        self.size += len(data)
        if self.size > self.endpoint.limits.max_buffer:
            self.endpoint.stats.slow_consumers += 1
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._wake()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("long-poll session closed id=%s code=%d %s", self.id, code, reason)
        self._wake()
        self.forget(self)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- requests ----------------------------------------------------------------------
    async def poll(self, window: float) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        self._wake()  # a newer poll replaces a waiting one
        if not self.messages and not self.closed:
            self.waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.waiter), window)
            self.last_seen = time.monotonic()
        if self.messages:
            messages, self.messages, self.size = self.messages, [], 0
            return {"status": 200, "messages": self.shape(messages)}
        if self.closed:
            return {"status": 410}
        return {"status": 204, "messages": []}

    async def post(self, lines: list[str]) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        if self.closed or self.socket is None:
            return {"status": 410}
        max_frame = self.endpoint.limits.max_frame
        arrived = self.endpoint.clock()  # the push deadline counts from the POST
        async with self.lock:
            for line in lines:
                if not line:
                    continue
                try:
                    opcode, data = decode_line(line)
                except ValueError as exc:
                    self.close(CLOSE_INVALID, str(exc))
                    return {"status": 410}
                if len(data) > max_frame:  # as a WebSocket frame over the limit: 1009
                    self.close(CLOSE_TOO_BIG, f"frame over {max_frame} bytes")
                    return {"status": 413}
                try:
                    await self.socket.handle(opcode, data, arrived)
                except CloseSocket as exc:
                    self.close(exc.code, exc.reason)
                    return {"status": 410}
        return {"status": 200}


__all__ = ["LP_KINDS", "SHAPES", "Listener", "Session", "decode_line"]
