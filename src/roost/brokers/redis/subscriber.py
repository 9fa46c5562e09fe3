"""The subscriber connection: one per node, every wanted channel, back after any loss.

The link owns one RESP2 connection. It sends SUBSCRIBE for each wanted channel,
reports every confirmation (``on_confirmed``, in the order Redis sends them: a
channel's confirmation comes before any of its messages), every message
(``on_message``) and every loss (``on_lost``), and reconnects with a short backoff,
subscribing every wanted channel again. ``seen`` is when anything last arrived: the
liveness probe restarts a link that went silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection

from .connection import BACKOFF, REDIS_ERRORS, RedisConnection, reraise_cancel
from .stats import BrokerStats

log = logging.getLogger("roost.redis")


class SubscriberLink:
    # The commands and replies of plain Pub/Sub (shards.py: the sharded ones).
    SUBSCRIBE, UNSUBSCRIBE = "SUBSCRIBE", "UNSUBSCRIBE"
    MESSAGE, CONFIRM = b"message", b"subscribe"

    def __init__(
        self,
        connection: RedisConnection,
        stats: BrokerStats,
        *,
        on_message: Callable[[bytes, bytes], None],
        on_confirmed: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.connection = connection
        self.stats = stats
        self.on_message = on_message
        self.on_confirmed = on_confirmed
        self.on_lost = on_lost
        self.wanted: set[str] = set()
        self.conn: AbstractConnection | None = None
        self.up = asyncio.Event()  # every channel of the current connection confirmed
        self.seen = connection.clock()
        self.ignore: bytes | None = None  # the probe channel: proves liveness, no more

    async def want(self, channel: str) -> None:
        """Subscribe (now if connected, else on the reconnect); confirmation comes later."""
        self.wanted.add(channel)
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await conn.send_command(self.SUBSCRIBE, channel)

    async def unwant(self, channel: str) -> None:
        self.wanted.discard(channel)
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await conn.send_command(self.UNSUBSCRIBE, channel)

    async def restart(self) -> None:
        """Drop the connection (the loop reconnects and resubscribes)."""
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def run(self) -> None:
        attempt = 0
        first = True
        while True:
            conn = self._connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                channels = sorted(self.wanted)
                self.conn = conn
                await self._subscribe_all(conn, channels)
                if not first:
                    self.stats.reconnects += 1
                    log.info(
                        "redis subscriber reconnected; resubscribing %d channels", len(channels)
                    )
                first = False
                attempt = 0
                self.seen = self.connection.clock()
                await self._read(conn, {c.encode() for c in channels})
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if self.stats.subscribed or attempt == 0:
                    log.warning("redis subscriber connection lost: %r", exc)
            except Exception:  # a bug downstream must not end the node's subscription
                log.exception("redis subscriber failed; reconnecting")
            finally:
                was_up = self.conn is conn
                self.conn = None
                self._mark(False)
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                if was_up:
                    self.on_lost()
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    async def _read(self, conn: AbstractConnection, pending: set[bytes]) -> None:
        clock = self.connection.clock
        message, confirm = self.MESSAGE, self.CONFIRM
        while True:
            reply = await conn.read_response(disconnect_on_error=True)
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = reply[0]
            if kind == message:
                # Anything arriving proves the subscription alive (a busy node may be
                # far behind its own probe; that is a backlog, not a stall).
                self.seen = clock()
                if reply[1] != self.ignore:
                    self.on_message(reply[1], reply[2])
            elif kind == confirm:
                channel = reply[1]
                self.on_confirmed(channel.decode())
                if pending:
                    pending.discard(channel)
                    if not pending:
                        self._mark(True)
            else:
                self._other(kind, reply)

    # -- what a sharded link (shards.py) does differently -------------------------------
    def _connection(self) -> AbstractConnection:
        return self.connection.subscriber()

    async def _subscribe_all(self, conn: AbstractConnection, channels: list[str]) -> None:
        await conn.send_command(self.SUBSCRIBE, *channels)

    def _mark(self, up: bool) -> None:
        """Every channel of the connection confirmed (True), or the connection gone."""
        self.stats.subscribed = up
        if up:
            self.up.set()
        else:
            self.up.clear()

    def _other(self, kind: bytes, reply: list[bytes]) -> None:
        """Any other push (an UNSUBSCRIBE's confirmation): nothing to do."""

    async def _publish_probe(self, channel: str) -> None:
        await self.connection.redis.publish(channel, b"probe")

    async def probe(self, channel: str, interval: float, timeout: float) -> None:
        """A message to itself every ``interval``: a link silent for ``timeout`` while
        Redis takes publishes is restarted (a subscription that stopped delivering)."""
        clock = self.connection.clock
        while True:
            await asyncio.sleep(interval)
            try:
                async with asyncio.timeout(2 * self.connection.timeout):
                    await self._publish_probe(channel)
            except REDIS_ERRORS:
                reraise_cancel()
                self.seen = clock()  # Redis is down or frozen: nothing to judge
                continue
            if self.conn is None:
                continue
            silent = clock() - self.seen
            if silent > timeout:
                self.stats.probe_restarts += 1
                log.warning("liveness probe not received for %.1fs: restarting", silent)
                self.seen = clock()
                await self.restart()
