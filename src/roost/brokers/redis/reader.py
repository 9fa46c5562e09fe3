"""Reading a topic's history from Redis: a joiner's recovery, a cursor's catch-up.

Both are one Lua script each (``history.READ``, ``history.CATCH_UP``), so a position
and the entries after it are read together; entries whose signature fails (with a
signing key) are dropped and counted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time

from ...pubsub.history import (
    HistoryPolicy,
    HistoryUnavailable,
    Page,
    Position,
    Recovery,
    StoredMessage,
    page_of,
    recover_from,
)
from . import codec
from .connection import REDIS_ERRORS, RedisConnection, text
from .history import CATCH_UP, PAGE, READ, continues, parse_entries
from .keys import Keys
from .stats import BrokerStats

log = logging.getLogger("roost.redis")


def nonce() -> str:
    """For the epoch a read may begin (``history.epoch_of``)."""
    return os.urandom(6).hex()


class HistoryReader:
    def __init__(
        self,
        connection: RedisConnection,
        keys: Keys,
        stats: BrokerStats,
        signing_key: bytes | None = None,
    ) -> None:
        self.connection = connection
        self.keys = keys
        self.stats = stats
        self.signing_key = signing_key
        self._read_script = connection.redis.register_script(READ)
        self._catch_up_script = connection.redis.register_script(CATCH_UP)
        self._page_script = connection.redis.register_script(PAGE)

    def trusted(self, m: StoredMessage, topic: str) -> bool:
        """A stream entry's signature holds (always true without a signing key)."""
        if self.signing_key is None:
            return True
        want = codec.sign(
            self.signing_key, m.node, topic, m.event, codec.unsplice(m.payload, m.offset), m.ts_ms
        )
        if m.mac is not None and hmac.compare_digest(want, m.mac):
            return True
        self.stats.rejected += 1
        log.warning("history entry %s/%d failed its signature check: dropped", topic, m.offset)
        return False

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        """Everything after ``since`` or the latest messages (see ``recover_from``)."""
        now = int(time.time() * 1000)
        try:
            if since is not None:
                current, window, (prev, base) = await self._read(
                    topic, since.offset, policy.max_len + 1
                )
                since = continues(since, prev, base, current.epoch, policy.max_age_ms)
                recovery = recover_from(since, current, window, policy, now)
                if recovery.recovered:
                    return recovery
            current, window, _ = await self._read(topic, -1, policy.recent)
        except REDIS_ERRORS as exc:
            raise HistoryUnavailable(str(exc) or type(exc).__name__) from exc
        return recover_from(None, current, window, policy, now)

    async def page(
        self, topic: str, before: int, limit: int, epoch: str, policy: HistoryPolicy
    ) -> Page:
        """One script on the topic's slot: its epoch and the ``limit + 1`` entries
        before ``before`` (one more than asked: whether older ones are left)."""
        now = int(time.time() * 1000)
        keys = [self.keys.history_meta(topic), self.keys.history_stream(topic)]
        try:
            found, top, entries = await self._page_script(
                keys=keys, args=[before, limit + 1, nonce()]
            )
        except REDIS_ERRORS as exc:
            raise HistoryUnavailable(str(exc) or type(exc).__name__) from exc
        window = [m for m in parse_entries(entries) if self.trusted(m, topic)]
        window.reverse()
        return page_of(epoch, before, limit, Position(int(top), text(found)), window, policy, now)

    async def _read(
        self, topic: str, after: int, count: int
    ) -> tuple[Position, list[StoredMessage], tuple[str | None, int]]:
        """The position, the entries, and the epoch before this one with the offset
        it ended at here (``history.continues``)."""
        keys = [self.keys.history_meta(topic), self.keys.history_stream(topic)]
        epoch, top, entries, prev, base = await self._read_script(
            keys=keys, args=[after, count, nonce()]
        )
        messages = [m for m in parse_entries(entries) if self.trusted(m, topic)]
        if after < 0:
            messages.reverse()
        prior = (text(prev) if prev else None, int(base))
        return Position(int(top), text(epoch)), messages, prior

    async def catch_up(
        self, topic: str, epoch: str | None, after: int, count: int
    ) -> tuple[str | None, int, list[StoredMessage], int]:
        """The topic's epoch (None: no history) and top, up to ``count`` entries after
        ``after``, and the offset they follow: ``after``, or where the topic's epoch
        begins when it is not ``epoch`` and does not continue it (``CATCH_UP``)."""
        keys = [self.keys.history_meta(topic), self.keys.history_stream(topic)]
        async with asyncio.timeout(2 * self.connection.timeout):
            found, top, entries, start = await self._catch_up_script(
                keys=keys, args=[epoch or "", after, count]
            )
        if not found:
            return None, 0, [], 0
        return text(found), int(top), parse_entries(entries), int(start)
