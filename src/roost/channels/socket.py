"""One client connection: its channels, refs and the server rules of the protocol.

The Socket is fed decoded frames by the transport (``handle``) and writes frames to
its ``Wire``. It knows nothing of aiohttp or Redis. Messages of one socket are handled
one after the other, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..protocol import (
    EMPTY,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    Encoded,
    Frame,
    Message,
    ProtocolError,
    Ref,
    same_ref,
)
from ..protocol.close import CLOSE_INVALID, CLOSE_POLICY
from ..protocol.close import CLOSE_RESTART as CLOSE_RESTART  # re-exported: server/drain.py
from ..pubsub import HistoryUnavailable, Wire, deadline
from ..security.ratelimit import TokenBucket
from .channel import Channel
from .contracts import Verdict
from .lifecycle import ChannelEvent, ChannelState
from .limits import SocketEndpoint as Endpoint  # the Endpoint as a socket sees it
from .reply import JoinError, Reply

log = logging.getLogger("roost.socket")
_TASKS: set[asyncio.Task[None]] = set()  # spawned by sockets, referenced until done

UNMATCHED = Encoded.of({"reason": "unmatched topic"})
RATE_LIMITED = Encoded.of({"reason": "rate limited"})
TOO_MANY = Encoded.of({"reason": "too many channels joined"})
JOIN_CRASHED = Encoded.of({"reason": "join crashed"})
UNAVAILABLE = Encoded.of({"reason": "temporarily unavailable"})


class CloseSocket(Exception):
    """The socket must be closed with this code (the transport does it)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class InvalidFrame(CloseSocket):
    """A frame that cannot be answered (no topic/ref known): close 1007."""

    def __init__(self, reason: str) -> None:
        super().__init__(CLOSE_INVALID, reason)


def _reason(verdict: Verdict) -> Encoded:
    reason = verdict.reason
    return Encoded.of(reason if isinstance(reason, dict) else {"reason": str(reason or "denied")})


class Socket:
    __slots__ = (
        "_joins",
        "_limited",
        "_pushes",
        "assigns",
        "channels",
        "closed",
        "endpoint",
        "peer",
        "serializer",
        "stats",
        "wire",
    )

    def __init__(
        self, endpoint: Endpoint, wire: Wire, assigns: dict[str, Any], peer: str | None = None
    ) -> None:
        self.endpoint = endpoint
        #: The client as per-client limits count it (``security.clientip.client_key``);
        #: fixed before the socket joins ``endpoint.sockets``.
        self.peer = peer
        self.wire = wire
        self.serializer = wire.kind.serializer
        self.assigns = assigns
        self.channels: dict[str, Channel] = {}
        self.closed = False
        self._pushes: TokenBucket | None = None  # made on first use: idle sockets stay small
        self._joins: TokenBucket | None = None
        self._limited = 0
        self.stats = endpoint.stats

    # -- output ------------------------------------------------------------------------
    def send(self, frame: Frame | None) -> None:
        if frame is not None and not self.closed:
            self.wire.write(self.wire.kind.pack(frame))

    def push(
        self,
        join_ref: Ref,
        topic: str,
        event: str,
        payload: Encoded,
        ref: Ref = None,
    ) -> None:
        self.stats.pushes_out += 1
        self.send(self.serializer.push(join_ref, topic, event, payload, ref))

    def reply(self, join_ref: Ref, ref: Ref, topic: str, reply: Reply) -> None:
        self._reply(join_ref, ref, topic, reply.status, Encoded.of(reply.response))

    def _reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: Encoded) -> None:
        self.stats.replies_out += 1
        self.send(self.serializer.reply(join_ref, ref, topic, status, response))

    # -- input -------------------------------------------------------------------------
    async def handle(self, opcode: int, data: bytes | str, arrived: float | None = None) -> None:
        """Decode one frame and act on it. Raises InvalidFrame for unanswerable garbage.

        ``arrived``: when the frame reached the node (``endpoint.clock``), if it waited in
        a queue before this; its push deadline counts from then (pubsub/deadline.py)."""
        try:
            msg = self.serializer.decode(opcode, data)
        except ProtocolError as exc:
            if exc.answerable:
                self._reply(
                    exc.join_ref,
                    exc.ref,
                    exc.topic or "",
                    "error",
                    Encoded.of({"reason": exc.reason}),
                )
                return
            raise InvalidFrame(exc.reason) from None
        await self.handle_message(msg, arrived)

    async def handle_message(self, msg: Message, arrived: float | None = None) -> None:
        topic, event = msg.topic, msg.event
        stats = self.stats
        if event == HEARTBEAT and topic == PHOENIX_TOPIC:
            stats.heartbeats += 1
            self._reply(None, msg.ref, topic, "ok", EMPTY)
            return
        now = self.endpoint.clock()
        due = (now if arrived is None else arrived) + self.endpoint.limits.push_deadline
        if now >= due:  # it waited its whole deadline in a queue: never handled, never late
            stats.expired += 1
            self._reply(msg.join_ref, msg.ref, topic, "error", UNAVAILABLE)
            return
        with deadline.within(due):
            await self._handle_message(msg)

    async def _handle_message(self, msg: Message) -> None:
        topic, event = msg.topic, msg.event
        stats = self.stats
        if event == PHX_JOIN:
            stats.joins += 1
        elif event == PHX_LEAVE:
            stats.leaves += 1
        else:
            stats.pushes += 1
        if not self._bucket(event == PHX_JOIN).take(self.endpoint.clock()):
            stats.rate_limited += 1
            self._limited += 1
            if self._limited >= self.endpoint.limits.abuse_limit:
                raise CloseSocket(CLOSE_POLICY, "rate limit abuse")
            self._reply(msg.join_ref, msg.ref, topic, "error", RATE_LIMITED)
            return
        self._limited = 0
        if event == PHX_JOIN:
            if self.peer is not None and self.endpoint.join_buckets.take(
                self.peer, self.endpoint.clock()
            ):  # the address's budget, over all its sockets, is spent: refused cheaply
                stats.rate_limited += 1
                self._reply(msg.join_ref, msg.ref, topic, "error", RATE_LIMITED)
                return
            await self._join(msg)
            return
        channel = self.channels.get(topic)
        if channel is None:
            if event == PHX_LEAVE:
                self._reply(msg.join_ref, msg.ref, topic, "ok", EMPTY)
            else:
                self._reply(msg.join_ref, msg.ref, topic, "error", UNMATCHED)
            return
        if msg.join_ref is not None and not same_ref(msg.join_ref, channel.join_ref):
            return  # stale: a message for an earlier join of this topic (Phoenix's ===)
        if event == PHX_LEAVE:
            self._reply(channel.join_ref, msg.ref, topic, "ok", EMPTY)
            await self._close_channel(channel, ChannelEvent.LEAVE)
            return
        payload = msg.payload
        guard = self.endpoint.guard
        if guard is not None:
            verdict = await guard.push(self, topic, event, payload)
            if not verdict.allowed:
                self._reply(channel.join_ref, msg.ref, topic, "error", _reason(verdict))
                return
            payload = verdict.payload
        try:
            reply = await channel.handle_in(event, payload, msg.ref)
        except Exception:
            log.exception("channel crashed topic=%s event=%s", topic, event)
            await self.crash(channel)
            return
        if reply is not None:
            self.reply(channel.join_ref, msg.ref, topic, reply)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of this socket (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(coro)
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def _bucket(self, join: bool) -> TokenBucket:
        limits = self.endpoint.limits
        if join:
            if self._joins is None:
                self._joins = TokenBucket(
                    limits.join_rate, limits.join_burst, self.endpoint.clock()
                )
            return self._joins
        if self._pushes is None:
            self._pushes = TokenBucket(limits.msg_rate, limits.msg_burst, self.endpoint.clock())
        return self._pushes

    async def _join(self, msg: Message) -> None:
        topic = msg.topic
        old = self.channels.get(topic)
        if old is not None:
            log.debug("duplicate join topic=%s: closing the existing channel", topic)
            await self._close_channel(old, ChannelEvent.REPLACED)
        cls = self.endpoint.router.match(topic)
        if cls is None:
            self._reply(msg.join_ref, msg.ref, topic, "error", UNMATCHED)
            return
        if len(self.channels) >= self.endpoint.limits.max_channels:
            self._reply(msg.join_ref, msg.ref, topic, "error", TOO_MANY)
            return
        channel = cls(self, topic, msg.join_ref)
        payload = msg.payload
        guard = self.endpoint.guard
        if guard is not None:
            verdict = await guard.join(self, topic, payload)
            if not verdict.allowed:
                self._refuse(channel)
                self._reply(msg.join_ref, msg.ref, topic, "error", _reason(verdict))
                return
            payload = verdict.payload
            if verdict.assigns:
                channel.assigns.update(verdict.assigns)
        lane = self.endpoint.join_lane
        try:
            left = deadline.remaining(self.endpoint.clock)
            async with asyncio.timeout(left if left is None else max(left, 0.0)):
                await lane.acquire()  # a few joins at a time, the rest wait in line
        except TimeoutError:
            self.stats.expired += 1
            self._refuse(channel)
            self._reply(msg.join_ref, msg.ref, topic, "error", UNAVAILABLE)
            return
        try:
            response = await channel.join(payload)
            # Subscribed (held) before the reply: nothing published after an ok join
            # is missed, and nothing of this topic is written before the reply.
            await channel.subscribe()
        except JoinError as refused:
            self._refuse(channel)
            self._reply(msg.join_ref, msg.ref, topic, "error", Encoded.of(refused.response))
            return
        except HistoryUnavailable:
            log.warning("join of %s refused: the broker is unavailable", topic)
            self._refuse(channel)
            self._reply(msg.join_ref, msg.ref, topic, "error", UNAVAILABLE)
            return
        except Exception:
            log.exception("join crashed topic=%s", topic)
            self._refuse(channel)
            self._reply(msg.join_ref, msg.ref, topic, "error", JOIN_CRASHED)
            return
        except BaseException:  # cancelled (the server stops): nothing stays subscribed
            self._refuse(channel, ChannelEvent.CLOSED)
            raise
        finally:
            lane.release()
        if self.closed:
            self._refuse(channel, ChannelEvent.CLOSED)
            return
        self.channels[topic] = channel
        channel.move(ChannelEvent.JOIN_OK)
        self._reply(msg.join_ref, msg.ref, topic, "ok", Encoded.of(response))
        if not self.endpoint.pubsub.release(topic, channel, channel.joined_at):
            channel.subscribed = False  # lost while joining: the client rejoins
            await self.crash(channel, ChannelEvent.LOST)
            return
        try:
            await channel.after_join()
        except Exception:
            log.exception("after_join crashed topic=%s", topic)
            await self.crash(channel)

    def _refuse(self, channel: Channel, event: ChannelEvent = ChannelEvent.REFUSED) -> None:
        """A join that did not happen: unsubscribed, CLOSED, no terminate (never joined)."""
        self._unsubscribe(channel)
        channel.move(event)

    async def crash(self, channel: Channel, event: ChannelEvent = ChannelEvent.CRASH) -> None:
        """A handler raised (or the topic was lost here): the channel dies with
        ``phx_error``, the socket lives on; the client rejoins."""
        if self.channels.get(channel.topic) is channel:
            self.push(channel.join_ref, channel.topic, PHX_ERROR, EMPTY, channel.join_ref)
        await self._drop(channel, event)

    async def _close_channel(self, channel: Channel, event: ChannelEvent) -> None:
        self.push(channel.join_ref, channel.topic, PHX_CLOSE, EMPTY, channel.join_ref)
        await self._drop(channel, event)

    async def _drop(self, channel: Channel, event: ChannelEvent) -> None:
        """End a joined channel (once): unsubscribe, ``terminate``, untrack presence."""
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        self._unsubscribe(channel)
        if channel.state is not ChannelState.JOINED:
            return  # ended already
        channel.move(event)
        try:
            await channel.terminate(event.value)
        except Exception:
            log.exception("terminate crashed topic=%s", channel.topic)
        presence = self.endpoint.presence
        if presence is not None:
            try:
                await presence.untrack(channel)
            except Exception:
                log.warning("presence untrack failed topic=%s", channel.topic, exc_info=True)

    def _unsubscribe(self, channel: Channel) -> None:
        if channel.subscribed:
            channel.subscribed = False
            self.endpoint.pubsub.unsubscribe(channel.topic, channel)

    async def close(self) -> None:
        """The connection is gone: every channel terminates (``closed``)."""
        self.closed = True
        for channel in list(self.channels.values()):
            await self._drop(channel, ChannelEvent.CLOSED)
