"""``roost.client``: connect, join, push with reply futures, handlers, heartbeat, reconnect.

Reconnects and rejoins wait a jittered exponential backoff (``backoff.RECONNECT``,
``backoff.REJOIN``), and a refused upgrade's ``Retry-After`` (HTTP 503/429) first: see
``roost.client.backoff``. The random source and the sleep are injectable (``random=``,
``sleep=``), so tests see every delay without waiting.

async with Client("ws://127.0.0.1:4000/socket", {"user": "al"}) as client:
    room = client.channel("rooms:lobby", {"user": "al"})
    await room.join()
    room.on("new:msg", print)
    reply = await room.push("new:msg", {"body": "hi"})
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from ..protocol import (
    BINARY,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    TEXT,
    Encoded,
    Message,
    ProtocolError,
    for_vsn,
)
from .backoff import RECONNECT, REJOIN, RETRY_STATUSES, Backoff, Random, next_delay
from .backoff import parse_retry_after as _parse_retry_after
from .states import ChannelEvent, ChannelState, advance

_ERRORABLE = (ChannelState.JOINING, ChannelState.JOINED, ChannelState.ERRORED)
log = logging.getLogger("roost.client")

Handler = Callable[[Any], Any]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PushReply:
    status: str
    response: Any

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class JoinRefused(Exception):
    def __init__(self, response: Any) -> None:
        super().__init__(response)
        self.response = response


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds a refused upgrade (HTTP 503 or 429) asks to wait (its Retry-After), or None."""
    if not isinstance(exc, aiohttp.WSServerHandshakeError) or exc.status not in RETRY_STATUSES:
        return None
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    return _parse_retry_after(value, time.time() if now is None else now)


def socket_url(url: str, params: dict[str, str], vsn: str) -> str:
    """``ws://h/socket`` → ``ws://h/socket/websocket?<params>&vsn=2.0.0`` (as phoenix.js)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith("/websocket"):
        path += "/websocket"
    query = dict(params)
    query["vsn"] = vsn
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


class ClientChannel:
    def __init__(self, client: Client, topic: str, payload: Any) -> None:
        self.client = client
        self.topic = topic
        self.payload = payload
        self.join_ref: str | None = None
        self.state = ChannelState.CLOSED  # moved only through states.TRANSITIONS
        self.join_response: Any = None
        self._handlers: dict[str, list[Handler]] = {}
        self._joined = asyncio.Event()

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(payload)`` (sync or async) for every ``event`` on this topic."""
        self._handlers.setdefault(event, []).append(handler)

    def off(self, event: str) -> None:
        self._handlers.pop(event, None)

    def move(self, event: ChannelEvent) -> None:
        self.state = advance(self.state, event)

    async def join(self, timeout: float = 10.0) -> Any:
        """Join; return the ok response or raise JoinRefused / TimeoutError."""
        self.client._channels[self.topic] = self
        self.move(ChannelEvent.JOIN)
        ref = self.client._next_ref()
        self.join_ref = ref
        try:
            reply = await self.client._request(
                ref, ref, self.topic, PHX_JOIN, self.payload, timeout
            )
        except BaseException:
            if self.state in (ChannelState.JOINING, ChannelState.ERRORED):
                self.move(ChannelEvent.FAILED)
            raise
        if reply.status != "ok":
            self.move(ChannelEvent.FAILED)
            raise JoinRefused(reply.response)
        self.move(ChannelEvent.JOINED)
        self.join_response = reply.response
        self._joined.set()
        return reply.response

    async def push(self, event: str, payload: Any, timeout: float = 10.0) -> PushReply:
        if self.state is not ChannelState.JOINED:
            await asyncio.wait_for(self._joined.wait(), timeout)
        ref = self.client._next_ref()
        return await self.client._request(self.join_ref, ref, self.topic, event, payload, timeout)

    async def leave(self, timeout: float = 10.0) -> PushReply:
        self.move(ChannelEvent.LEAVE)
        ref = self.client._next_ref()
        try:
            return await self.client._request(
                self.join_ref, ref, self.topic, PHX_LEAVE, {}, timeout
            )
        finally:
            self._closed()

    def _closed(self) -> None:
        self.move(ChannelEvent.CLOSED)
        self._joined.clear()
        if self.client._channels.get(self.topic) is self:
            del self.client._channels[self.topic]

    def _dispatch(self, msg: Message) -> None:
        if msg.join_ref is not None and self.join_ref is not None and msg.join_ref != self.join_ref:
            return  # a message for an earlier join
        if msg.event == PHX_CLOSE:
            self._closed()
        elif msg.event == PHX_ERROR and self.state in _ERRORABLE:
            self.move(ChannelEvent.ERROR)
            self._joined.clear()
            self.client._schedule_rejoin(self)
        for handler in self._handlers.get(msg.event, ()):
            try:
                result = handler(msg.payload)
                if inspect.isawaitable(result):
                    self.client._spawn(result)
            except Exception:
                log.exception("handler for %s failed", msg.event)


class Client:
    def __init__(
        self,
        url: str,
        params: dict[str, str] | None = None,
        *,
        vsn: str = "2.0.0",
        heartbeat: float = 30.0,
        reconnect: bool = True,
        headers: dict[str, str] | None = None,
        reconnect_backoff: Backoff = RECONNECT,
        rejoin_backoff: Backoff = REJOIN,
        random: Random = _random.random,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = url
        self.params = dict(params or {})
        self.serializer = for_vsn(vsn)
        self.vsn = vsn
        self.heartbeat_interval = heartbeat
        self.reconnect = reconnect
        self.headers = headers or {}
        self.reconnect_backoff = reconnect_backoff
        self.rejoin_backoff = rejoin_backoff
        self._random = random
        self._sleep = sleep
        #: seconds the last refused (re)connect was asked to wait (Retry-After), if any
        self.retry_after: float | None = None
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[PushReply]] = {}
        self._channels: dict[str, ClientChannel] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._heartbeat_failed = False
        self.close_code: int | None = None
        self.on_open: list[Callable[[], Any]] = []
        self.on_close: list[Callable[[int | None], Any]] = []
        self.on_message: list[Callable[[Message], Any]] = []

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def channel(self, topic: str, payload: Any = None) -> ClientChannel:
        return ClientChannel(self, topic, {} if payload is None else payload)

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the socket (raises if the first attempt fails), then keep it open."""
        self._session = aiohttp.ClientSession()
        try:
            ws = await self._open(timeout)
        except BaseException as exc:
            # refused with 503/429: ``retry_after`` says when to come back (``retry_after(exc)``)
            self.retry_after = retry_after(exc)
            await self._session.close()
            raise
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def send_raw(self, data: str | bytes) -> None:
        """Write a frame as is (tests of bad input)."""
        assert self._ws is not None
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    # -- internals -------------------------------------------------------------------
    def _next_ref(self) -> str:
        return str(next(self._refs))

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        url = socket_url(self.url, self.params, self.vsn)
        ws = await self._session.ws_connect(
            url,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
            autoping=True,
            max_msg_size=0,
            headers=self.headers,
        )
        self._ws = ws
        self._connected.set()
        for cb in self.on_open:
            cb()
        return ws

    async def _send(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        frame = self.serializer.encode_client(join_ref, ref, topic, event, Encoded.of(payload))
        if frame.opcode == BINARY:
            await self._ws.send_bytes(frame.data)
        else:
            await self._ws.send_str(frame.data.decode())

    async def _request(
        self,
        join_ref: str | None,
        ref: str,
        topic: str,
        event: str,
        payload: Any,
        timeout: float,
    ) -> PushReply:
        fut: asyncio.Future[PushReply] = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        try:
            await self._send(join_ref, ref, topic, event, payload)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(ref, None)

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        attempt = 0
        while True:
            beat = asyncio.get_running_loop().create_task(self._heartbeat())
            try:
                await self._read(ws)
            finally:
                beat.cancel()
            self.close_code = ws.close_code
            self._connected.clear()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed"))
            for channel in self._channels.values():
                if channel.state in (ChannelState.JOINED, ChannelState.JOINING):
                    channel.move(ChannelEvent.DISCONNECTED)
                    channel._joined.clear()
            for cb in self.on_close:
                cb(ws.close_code)
            clean = ws.close_code == 1000 and not self._heartbeat_failed
            self._heartbeat_failed = False
            if self._closing or not self.reconnect or clean:
                return
            wait_first: float | None = None  # the last refusal's Retry-After
            while True:
                attempt += 1
                delay = next_delay(self.reconnect_backoff, attempt, wait_first, self._random)
                await self._sleep(delay)
                try:
                    ws = await self._open(10.0)
                    break
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    wait_first = retry_after(exc)
                    if wait_first is not None:
                        self.retry_after = wait_first
                    log.debug("reconnect %d failed: %r (retry after %s)", attempt, exc, wait_first)
            attempt = 0
            for channel in list(self._channels.values()):
                if channel.state is ChannelState.ERRORED:
                    self._schedule_rejoin(channel, immediate=True)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type is aiohttp.WSMsgType.TEXT:
                opcode, data = TEXT, raw.data
            elif raw.type is aiohttp.WSMsgType.BINARY:
                opcode, data = BINARY, raw.data
            else:
                break
            try:
                msg = self.serializer.decode_server(opcode, data)
            except ProtocolError as exc:
                log.warning("undecodable frame from server: %s", exc.reason)
                continue
            self._route(msg)

    def _route(self, msg: Message) -> None:
        for cb in self.on_message:
            try:
                cb(msg)
            except Exception:  # (raising here would end the read loop and the heartbeats)
                log.exception("on_message callback failed")
        if msg.event == PHX_REPLY and isinstance(msg.ref, str):  # (this client's refs are text)
            fut = self._pending.get(msg.ref)
            if fut is not None and not fut.done():
                payload = msg.payload
                fut.set_result(PushReply(payload.get("status", ""), payload.get("response")))
                return
        channel = self._channels.get(msg.topic)
        if channel is not None:
            channel._dispatch(msg)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            ref = self._next_ref()
            try:
                await self._request(
                    None, ref, PHOENIX_TOPIC, HEARTBEAT, {}, self.heartbeat_interval
                )
            except (TimeoutError, ConnectionError):
                self._heartbeat_failed = True
                if self._ws is not None:
                    await self._ws.close(code=1000, message=b"heartbeat timeout")
                return

    def _schedule_rejoin(self, channel: ClientChannel, immediate: bool = False) -> None:
        self._spawn(self._rejoin(channel, immediate))

    async def _rejoin(self, channel: ClientChannel, immediate: bool) -> None:
        """Join again while errored: at once after a reconnect (the reconnect was jittered),
        else after ``rejoin_backoff`` — every member of a crashed channel gets phx_error at
        the same moment, and they must not all come back at the same moment."""
        tries = 0
        while channel.state is ChannelState.ERRORED and not self._closing:
            if tries or not immediate:
                attempt = tries if immediate else tries + 1
                await self._sleep(self.rejoin_backoff.delay(attempt, self._random))
            tries += 1
            if not self.connected:
                await self._connected.wait()
            try:
                await channel.join()
                for handler in channel._handlers.get("rejoined", ()):
                    handler(channel.join_response)
                return
            except (TimeoutError, JoinRefused, ConnectionError) as exc:
                log.debug("rejoin %s failed: %r", channel.topic, exc)  # (state: errored)
