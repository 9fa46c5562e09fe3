"""``/socket/longpoll``: the Phoenix long-poll transport, reachable from any node.

A session (one Socket, its channels and a buffer of frames: longpoll_session.py)
lives on the node that created it. Its token is signed and names that node
(security/lptoken.py). Requests may arrive at any node — a round-robin load balancer
with no stickiness — and a node that does not own the session relays the request
through the PubSub to the owner's channel ``phx:lp:node:<node>`` and relays the
owner's answer back, as Phoenix does. What travels through the broker is the session
id and a one-way digest of the token, never the token: reading Redis does not give
anyone a session.

Every request passes the Origin check, then the token check; HTTP status is always
200, the real status is in the JSON body (what phoenix.js reads):

    GET  (no session token)  → {"status": 410, "token": T, "messages": []}   a new session
    GET  ?token=T            → waits up to the window: 200 with messages, or 204
                               (messages are objects for vsn 1.x or none, encoded
                               strings for 2.x, as Phoenix: longpoll_session.py)
    POST ?token=T  (ndjson)  → {"status": 200}; lines starting "[" or "{" are JSON, others
                               base64 binary
    Origin not allowed       → {"status": 403}
    token forged, too old, or its session gone from this node → {"status": 410} at once
    token of another node    → that node's answer; 410 if it does not answer in ack_wait
    body over 1 MiB or 100 lines → {"status": 413}; a line over --max-frame → 413, and
                               the session closes (1009) as a WebSocket would
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from ..channels import Endpoint, Socket
from ..protocol import Encoded
from ..protocol.close import CLOSE_GOING_AWAY
from ..pubsub import HistoryUnavailable, WireKind
from ..security.lptoken import PREFIX, BadToken, SessionTokens, proof
from .admission import ENDPOINT_KEY, admit, client_of
from .body import TooLarge, read_body
from .longpoll_session import LP_KINDS, Listener, Session

log = logging.getLogger("roost.longpoll")

#: How long a node waits for the owner of a session to take a relayed request (as
#: Phoenix's pubsub_timeout_ms). Only a validly signed token of another node waits.
ACK_WAIT = 2.0
MAX_LINES = 100
MAX_BODY = 1024 * 1024


def node_topic(node: str) -> str:
    """The channel through which a node takes requests relayed to its sessions."""
    return f"phx:lp:node:{node}"


class LongPollManager:
    def __init__(
        self,
        endpoint: Endpoint,
        window: float = 10.0,
        tokens: SessionTokens | None = None,
        ack_wait: float = ACK_WAIT,
    ) -> None:
        self.endpoint = endpoint
        self.window = window
        self.tokens = tokens if tokens is not None else SessionTokens(None)
        self.ack_wait = ack_wait
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._relays = Listener(self._relayed)
        self._listening = False
        self._listen_lock = asyncio.Lock()

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
        if self._listening:
            self.endpoint.pubsub.unsubscribe(node_topic(self.endpoint.node), self._relays)
            self._listening = False
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)

    async def _listen(self) -> None:
        """Subscribe this node's relay channel, once (before its first session)."""
        async with self._listen_lock:
            if not self._listening:
                await self.endpoint.pubsub.subscribe(node_topic(self.endpoint.node), self._relays)
                self._listening = True

    async def create(
        self, kind: WireKind, assigns: dict[str, Any], peer: str | None = None
    ) -> Session:
        """A new session; raises HistoryUnavailable when the broker cannot subscribe."""
        await self._listen()
        sid = secrets.token_urlsafe(18)
        token = self.tokens.sign(self.endpoint.node, sid)
        session = Session(self.endpoint, self.forget, sid, token, kind)
        session.socket = Socket(self.endpoint, session, assigns, peer)  # counted per client
        self.sessions[sid] = session
        self.endpoint.sockets.add(session.socket)
        self.endpoint.stats.connections_total += 1
        return session

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.socket is not None:
            self.endpoint.sockets.discard(session.socket)
            self.spawn(session.socket.close())

    async def _reap(self) -> None:
        """Sessions nobody polled for 1.5 windows die (their channels terminate), and
        so do sessions older than their token may be."""
        while True:
            await asyncio.sleep(self.window / 2)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                idle = session.waiter is None or session.waiter.done()
                if idle and now - session.last_seen > 1.5 * self.window:
                    session.close(CLOSE_GOING_AWAY, "long-poll session expired")
                elif now - session.created > self.tokens.max_age:
                    session.close(CLOSE_GOING_AWAY, "long-poll token expired")

    # -- finding a token's session ---------------------------------------------------
    def resolve(self, token: str) -> Session | tuple[str, str] | None:
        """The local session of ``token``, or (owner node, session id) to relay to,
        or None: forged, too old, or naming this node and no live session here."""
        try:
            node, sid = self.tokens.claimed(token)
            if node == self.endpoint.node or self.tokens.shared:
                self.tokens.verify(token)
        except BadToken as exc:
            log.info("long-poll token refused: %s", exc.reason)
            return None
        if node != self.endpoint.node:
            return node, sid
        session = self.sessions.get(sid)
        if session is None or not hmac.compare_digest(session.token, token):
            return None
        return session

    # -- requests relayed between nodes ----------------------------------------------
    def _relayed(self, event: str, payload: Encoded) -> None:
        """A request another node relayed for one of this node's sessions."""
        try:
            request = payload.value()
            reply, sid, given = str(request["reply"]), str(request["sid"]), str(request["proof"])
        except (ValueError, KeyError, TypeError):
            return
        session = self.sessions.get(sid)
        if session is None or not hmac.compare_digest(given, session.proof):
            self.spawn(self.endpoint.pubsub.broadcast(reply, "lp:reply", {"status": 410}))
            return
        if event == "lp:poll":
            work = session.poll(self.window)
        elif event == "lp:post":
            lines = request.get("lines")
            work = session.post([str(line) for line in lines] if isinstance(lines, list) else [])
        else:
            return
        self.spawn(self._answer(work, reply))

    async def _answer(self, work: Any, reply: str) -> None:
        pubsub = self.endpoint.pubsub
        await pubsub.broadcast(reply, "lp:ack", {})  # "the session lives here"
        result = await work
        await pubsub.broadcast(reply, "lp:reply", result)

    async def relay(
        self, node: str, sid: str, token: str, event: str, body: dict[str, Any], wait: float
    ) -> dict[str, Any]:
        """Hand a request to the node owning the session; 410 if it does not take it."""
        pubsub = self.endpoint.pubsub
        reply = f"phx:lp:r:{secrets.token_urlsafe(12)}"
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[None] = loop.create_future()
        answer: asyncio.Future[Any] = loop.create_future()

        def got(event: str, payload: Encoded) -> None:
            if event == "lp:reply" and not answer.done():
                answer.set_result(payload.value())
            if event in ("lp:ack", "lp:reply") and not ack.done():
                ack.set_result(None)

        listener = Listener(got)
        try:
            await pubsub.subscribe(reply, listener)
        except HistoryUnavailable:  # the broker is down: phoenix.js retries on 500
            return {"status": 500}
        try:
            request = {**body, "sid": sid, "proof": proof(token), "reply": reply}
            await pubsub.broadcast(node_topic(node), event, request)
            await asyncio.wait_for(ack, self.ack_wait)  # that node is gone: say so
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
        return header
    for value in reversed(request.query.getall("token", [])):
        if value.startswith(PREFIX):
            return value
    return None


def _params(request: web.Request) -> dict[str, str]:
    """Connect params: the query without the session token."""
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key == "token" and value.startswith(PREFIX):
            continue
        params.setdefault(key, value)
    return params


def _origin_allowed(request: web.Request) -> bool:
    origins = request.app[ENDPOINT_KEY].origins
    if origins.allows(request.headers.get("Origin"), request.host, request.secure):
        return True
    log.info("long-poll refused origin=%s host=%s", request.headers.get("Origin"), request.host)
    return False


def _status(status: int) -> web.Response:
    return web.json_response({"status": status})


async def _open(request: web.Request, manager: LongPollManager) -> web.Response:
    """A GET without a session token: admission, then a new session."""
    admitted = await admit(
        request,
        request.app[ENDPOINT_KEY],
        _params(request),
        request.headers.get("X-Phoenix-AuthToken"),
        "longpoll",
    )
    if isinstance(admitted, web.Response):
        # phoenix.js LongPoll reads the status from the body: 403 is a refusal; it throws
        # on any status it does not know (429, 503), and retries 500 with backoff. The
        # Retry-After header of a 429/503 stays on the response (admission's hook).
        status = 403 if admitted.status == 403 else 500
        return web.json_response({"status": status, "messages": []})
    serializer, assigns = admitted
    try:
        created = await manager.create(LP_KINDS[serializer.vsn], assigns, client_of(request))
    except HistoryUnavailable:  # phoenix.js closes and retries on 500
        return web.json_response({"status": 500, "messages": []})
    return web.json_response({"status": 410, "token": created.token, "messages": []})


async def longpoll_get(request: web.Request) -> web.Response:
    manager = request.app[LONGPOLL_KEY]
    if not _origin_allowed(request):
        return _status(403)
    token = _session_token(request)
    if token is None:
        return await _open(request, manager)
    found = manager.resolve(token)
    if found is None:
        return _status(410)
    if isinstance(found, Session):
        polled = await found.poll(manager.window)
    else:
        node, sid = found
        polled = await manager.relay(node, sid, token, "lp:poll", {}, manager.window + 5)
    if polled.get("status") in (200, 204):
        polled["token"] = token  # added here: a relayed answer never carries it
    return web.json_response(polled)


async def longpoll_post(request: web.Request) -> web.Response:
    manager = request.app[LONGPOLL_KEY]
    if not _origin_allowed(request):
        return _status(403)
    token = _session_token(request)
    found = None if token is None else manager.resolve(token)
    if token is None or found is None:
        return _status(410)
    try:
        raw = await read_body(request, MAX_BODY)
    except TooLarge:
        return _status(413)
    lines = raw.decode(errors="replace").split("\n")
    if len(lines) > MAX_LINES:
        return _status(413)
    if isinstance(found, Session):
        return web.json_response(await found.post(lines))
    node, sid = found
    return web.json_response(
        await manager.relay(node, sid, token, "lp:post", {"lines": lines}, 10.0)
    )


__all__ = ["LONGPOLL_KEY", "LP_KINDS", "Listener", "LongPollManager", "Session"]
