"""``/socket/longpoll``: the Phoenix long-poll transport, reachable from any node.

A session (one Socket, its channels and a buffer of frames) lives on the node that
created it. Requests for it may arrive at any node — a round-robin load balancer
with no stickiness — and a node that does not own the session forwards the request
through the PubSub (topic ``phx:lp:<id>``) and relays the owner's answer, as Phoenix
does. HTTP status is always 200; the real status is in the JSON body:

    GET  (no session token)  → {"status": 410, "token": T, "messages": []}   a new session
    GET  ?token=T            → waits up to the window: 200 with messages, or 204
    POST ?token=T  (ndjson)  → {"status": 200}; lines starting "[" or "{" are JSON, others
                               base64 binary; 410 when the session is gone
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..channels import CloseSocket, Endpoint, Socket
from ..protocol import BINARY, TEXT, V1, V2, Encoded, Frame
from ..protocol.close import CLOSE_GOING_AWAY, CLOSE_INVALID, CLOSE_SLOW_CONSUMER
from ..pubsub import HistoryUnavailable, WireKind
from .admission import ENDPOINT_KEY, admit

log = logging.getLogger("roost.longpoll")

PREFIX = "lp."
ACK_WAIT = 2.0  # how long a node waits for the owner of a session to answer
MAX_LINES = 100
MAX_BODY = 1024 * 1024


def _text_only(frame: Frame) -> bytes:
    # phoenix.js long-poll reads every message as text: binary frames cannot travel.
    return frame.data if frame.opcode == TEXT else b""


LP_KINDS = {
    V1.vsn: WireKind("lp/v1", V1, _text_only),
    V2.vsn: WireKind("lp/v2", V2, _text_only),
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


class Session:
    def __init__(self, manager: LongPollManager, sid: str, kind: WireKind) -> None:
        self.manager = manager
        self.id = sid
        self.kind = kind
        self.messages: list[str] = []
        self.size = 0
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.last_seen = time.monotonic()
        self.lock = asyncio.Lock()
        self.socket: Socket | None = None
        self.listener = Listener(self._remote)

    @property
    def token(self) -> str:
        return PREFIX + self.id

    # -- the Wire interface ------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.messages.append(data.decode())
        self.size += len(data)
        if self.size > self.manager.endpoint.limits.max_buffer:
            self.manager.endpoint.stats.slow_consumers += 1
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        self._wake()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("long-poll session closed id=%s code=%d %s", self.id, code, reason)
        self._wake()
        self.manager.forget(self)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- requests ----------------------------------------------------------------------
    async def poll(self, window: float) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)  # a newer poll replaces a waiting one
        if not self.messages and not self.closed:
            self.waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.waiter), window)
            self.last_seen = time.monotonic()
        if self.messages:
            messages, self.messages, self.size = self.messages, [], 0
            return {"status": 200, "token": self.token, "messages": messages}
        if self.closed:
            return {"status": 410}
        return {"status": 204, "token": self.token, "messages": []}

    async def post(self, lines: list[str]) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        if self.closed or self.socket is None:
            return {"status": 410}
        async with self.lock:
            for line in lines:
                if not line:
                    continue
                if line[0] in "[{":
                    opcode, data = TEXT, line.encode()
                else:
                    try:
                        opcode, data = BINARY, base64.b64decode(line, validate=True)
                    except (binascii.Error, ValueError):
                        self.close(CLOSE_INVALID, "bad base64 line")
                        return {"status": 410}
                try:
                    await self.socket.handle(opcode, data)
                except CloseSocket as exc:
                    self.close(exc.code, exc.reason)
                    return {"status": 410}
        return {"status": 200}

    # -- requests forwarded from other nodes -----------------------------------------
    def _remote(self, event: str, payload: Encoded) -> None:
        try:
            request = payload.value()
            reply = str(request["reply"])
        except (ValueError, KeyError, TypeError):
            return
        if event == "lp:poll":
            work = self.poll(self.manager.window)
        elif event == "lp:post":
            work = self.post([str(line) for line in request.get("lines", [])])
        else:
            return
        self.manager.spawn(self._answer(work, reply))

    async def _answer(self, work: Any, reply: str) -> None:
        pubsub = self.manager.endpoint.pubsub
        await pubsub.broadcast(reply, "lp:ack", {})  # "the session lives here"
        result = await work
        await pubsub.broadcast(reply, "lp:reply", result)


class LongPollManager:
    def __init__(self, endpoint: Endpoint, window: float = 10.0) -> None:
        self.endpoint = endpoint
        self.window = window
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def spawn(self, aw: Any) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            session.close(CLOSE_GOING_AWAY, "server stopping")
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)

    async def create(self, kind: WireKind, assigns: dict[str, Any]) -> Session:
        session = Session(self, secrets.token_urlsafe(18), kind)
        session.socket = Socket(self.endpoint, session, assigns)
        self.sessions[session.id] = session
        self.endpoint.sockets.add(session.socket)
        self.endpoint.stats.connections_total += 1
        try:
            await self.endpoint.pubsub.subscribe(f"phx:lp:{session.id}", session.listener)
        except HistoryUnavailable:  # the broker cannot subscribe: no session, say so
            self.sessions.pop(session.id, None)
            self.endpoint.sockets.discard(session.socket)
            raise
        return session

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.endpoint.pubsub.unsubscribe(f"phx:lp:{session.id}", session.listener)
        if session.socket is not None:
            self.endpoint.sockets.discard(session.socket)
            self.spawn(session.socket.close())

    async def _reap(self) -> None:
        """Sessions nobody polled for 1.5 windows die (their channels terminate)."""
        while True:
            await asyncio.sleep(self.window / 2)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                idle = session.waiter is None or session.waiter.done()
                if idle and now - session.last_seen > 1.5 * self.window:
                    session.close(CLOSE_GOING_AWAY, "long-poll session expired")

    async def forward(
        self, sid: str, event: str, body: dict[str, Any], wait: float
    ) -> dict[str, Any]:
        """Hand a request to the node owning the session; 410 if none answers."""
        pubsub = self.endpoint.pubsub
        reply = f"phx:lp:r:{secrets.token_urlsafe(12)}"
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[None] = loop.create_future()
        answer: asyncio.Future[Any] = loop.create_future()

        def got(event: str, payload: Encoded) -> None:
            if event == "lp:ack" and not ack.done():
                ack.set_result(None)
            elif event == "lp:reply" and not answer.done():
                answer.set_result(payload.value())

        listener = Listener(got)
        try:
            await pubsub.subscribe(reply, listener)
        except HistoryUnavailable:  # the broker is down: phoenix.js retries on 500
            return {"status": 500}
        try:
            await pubsub.broadcast(f"phx:lp:{sid}", event, {**body, "reply": reply})
            await asyncio.wait_for(ack, ACK_WAIT)  # nobody owns it: gone, say so at once
            result = await asyncio.wait_for(answer, wait)
            return result if isinstance(result, dict) else {"status": 410}
        except TimeoutError:
            return {"status": 410}
        finally:
            pubsub.unsubscribe(reply, listener)


LONGPOLL_KEY: web.AppKey[LongPollManager] = web.AppKey("longpoll", LongPollManager)


def _session_token(request: web.Request) -> str | None:
    header = request.headers.get("X-Phoenix-Longpoll-Token")
    if header and header.startswith(PREFIX):
        return header[len(PREFIX) :]
    for value in reversed(request.query.getall("token", [])):
        if value.startswith(PREFIX):
            return value[len(PREFIX) :]
    return None


def _params(request: web.Request) -> dict[str, str]:
    """Connect params: the query without the session token."""
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key == "token" and value.startswith(PREFIX):
            continue
        params.setdefault(key, value)
    return params


async def longpoll_get(request: web.Request) -> web.Response:
    manager = request.app[LONGPOLL_KEY]
    sid = _session_token(request)
    if sid is None:
        endpoint = request.app[ENDPOINT_KEY]
        admitted = await admit(
            request,
            endpoint,
            _params(request),
            request.headers.get("X-Phoenix-AuthToken"),
            "longpoll",
        )
        if isinstance(admitted, web.Response):
            # phoenix.js LongPoll reads the status from the body (403: refused).
            return web.json_response({"status": admitted.status, "messages": []})
        serializer, assigns = admitted
        try:
            created = await manager.create(LP_KINDS[serializer.vsn], assigns)
        except HistoryUnavailable:  # phoenix.js closes and retries on 500
            return web.json_response({"status": 500, "messages": []})
        return web.json_response({"status": 410, "token": created.token, "messages": []})
    session = manager.sessions.get(sid)
    if session is not None:
        return web.json_response(await session.poll(manager.window))
    return web.json_response(await manager.forward(sid, "lp:poll", {}, manager.window + 5))


async def longpoll_post(request: web.Request) -> web.Response:
    manager = request.app[LONGPOLL_KEY]
    sid = _session_token(request)
    if sid is None:
        return web.json_response({"status": 410})
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return web.json_response({"status": 413})
    lines = raw.decode(errors="replace").split("\n")
    if len(lines) > MAX_LINES:
        return web.json_response({"status": 413})
    session = manager.sessions.get(sid)
    if session is not None:
        return web.json_response(await session.post(lines))
    return web.json_response(await manager.forward(sid, "lp:post", {"lines": lines}, 10.0))
