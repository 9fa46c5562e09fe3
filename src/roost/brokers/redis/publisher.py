"""The ordered publisher: every broadcast a node sends to Redis, in order, pipelined.

Publishes are queued and sent by one task, everything queued in one pipelined round
trip, so they reach Redis in the order they were made. Two kinds of item:

- ``PlainPublish``: a PUBLISH of an envelope (local members already have it). If
  Redis does not take it, it stays at the head of the queue and goes again once Redis
  answers — for up to ``plain_ttl`` seconds, then it is dropped and counted.
- ``StoredPublish``: the history script (store, then publish). Its caller awaits the
  offset until its deadline — the client message's push deadline when there is one
  (pubsub/deadline.py), else ``deadline`` seconds — and never longer:
  ``HistoryUnavailable`` when the message was certainly not stored (Redis failed the
  batch, it was never sent, or Redis is known not to answer: then it is refused at
  once instead of queueing behind a dead path), ``HistoryTimeout`` when it was sent and
  no answer came in time (it may have been stored: a frozen Redis that wakes up, or a
  path that lost only the answers, runs it). Either is an error reply to the client,
  never a late ``ok``; nothing acknowledged is lost.

With ``wait_replicas`` N > 0, a batch holding stored publishes ends with ``WAIT N
timeout`` in the same pipeline (same connection, so it covers every write before
it): its stored publishes are acknowledged only when N replicas have them. When
fewer answer in time the callers get ``HistoryUnavailable`` (the client's
``temporarily unavailable``) — though the message is stored on the master and was
already published, so members may receive it: "unavailable" means "not known to
survive a failover", not "not sent".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...pubsub import deadline as push_deadline
from ...pubsub.history import HistoryTimeout, HistoryUnavailable
from .connection import BACKOFF, REDIS_ERRORS, RedisConnection, text
from .history import PUBLISH_STORED
from .stats import BrokerStats

log = logging.getLogger("roost.redis")

MAX_BATCH = 1000  # commands in one pipelined round trip


@dataclass(slots=True)
class PlainPublish:
    channel: str
    data: bytes
    born: float


@dataclass(slots=True)
class StoredPublish:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[tuple[int, str, bool]]
    deadline: float
    sent: bool = False  # handed to Redis: past the deadline its outcome is unknown


class Publisher:
    def __init__(
        self,
        connection: RedisConnection,
        stats: BrokerStats,
        *,
        deadline: float,
        max_queue: int = 100_000,
        plain_ttl: float = 30.0,
        wait_replicas: int = 0,
        wait_timeout: float = 0.2,
    ) -> None:
        self.connection = connection
        self.stats = stats
        self.deadline = deadline
        self.max_queue = max_queue
        self.plain_ttl = plain_ttl
        self.wait_replicas = wait_replicas
        self.wait_ms = max(1, round(wait_timeout * 1000))
        self.clock = connection.clock
        self.queue: deque[PlainPublish | StoredPublish] = deque()
        self._event = asyncio.Event()
        self._script = connection.redis.register_script(PUBLISH_STORED)
        #: Metrics hook: seconds of one pipelined round trip.
        self.observe: Callable[[float], None] | None = None
        #: Whether Redis is known to answer (the health check's verdict): while it is
        #: not, stored publishes are refused at once rather than queued behind a dead path.
        self.reachable: Callable[[], bool] = lambda: True
        #: Called when a batch got no answer in time: a command that does not answer is a
        #: dead path (readiness says so at once; the health check says when it answers).
        self.unanswered: Callable[[], None] = lambda: None

    def plain(self, channel: str, data: bytes) -> bool:
        """Queue a PUBLISH; False (counted as dropped) when the queue is full."""
        if len(self.queue) >= self.max_queue:
            self.stats.dropped += 1
            return False
        self.queue.append(PlainPublish(channel, data, self.clock()))
        self._event.set()
        return True

    async def stored(self, keys: list[str], args: list[Any]) -> tuple[int, str, bool]:
        """Run the history script in order with everything else; its (offset, epoch,
        duplicate: the idempotency key was stored already, nothing was published)."""
        if len(self.queue) >= self.max_queue:
            self.stats.dropped += 1
            raise HistoryUnavailable("publish queue full")
        if not self.reachable():
            self.stats.publish_errors += 1
            raise HistoryUnavailable("redis does not answer")
        budget = self.deadline
        left = push_deadline.remaining(self.clock)
        if left is not None:
            budget = min(budget, left)
        if budget <= 0:
            self.stats.publish_timeouts += 1
            raise HistoryUnavailable("publish deadline passed")
        fut: asyncio.Future[tuple[int, str, bool]] = asyncio.get_running_loop().create_future()
        # The script marks an epoch whose writes are acknowledged without WAIT (ARGV 15).
        args = [*args, self.wait_replicas]
        item = StoredPublish(keys, args, fut, self.clock() + budget)
        self.queue.append(item)
        self._event.set()
        try:
            async with asyncio.timeout(budget):
                return await asyncio.shield(fut)
        except TimeoutError:
            self.stats.publish_timeouts += 1
            if not fut.done():  # not sent yet: it never will be (_next_batch skips it)
                fut.set_exception(HistoryUnavailable("publish deadline passed"))
                fut.exception()
            if item.sent:
                raise HistoryTimeout("no answer from redis before the deadline") from None
            raise HistoryUnavailable("publish deadline passed") from None

    def _next_batch(self) -> list[PlainPublish | StoredPublish]:
        """Take up to MAX_BATCH items; stored ones whose caller gave up are skipped."""
        now = self.clock()
        batch: list[PlainPublish | StoredPublish] = []
        queue = self.queue
        while queue and len(batch) < MAX_BATCH:
            item = queue.popleft()
            if isinstance(item, StoredPublish):
                if item.future.done():
                    continue
                if now >= item.deadline:
                    self.stats.publish_timeouts += 1
                    item.future.set_exception(HistoryUnavailable("publish deadline passed"))
                    item.future.exception()
                    continue
            elif now - item.born > self.plain_ttl:
                self.stats.publish_errors += 1
                continue
            batch.append(item)
        return batch

    async def run(self) -> None:
        failures = 0
        while True:
            await self._event.wait()
            self._event.clear()
            while self.queue:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    results = await self._send(batch)
                except REDIS_ERRORS as exc:
                    failures += 1
                    self._failed(batch, exc, failures)
                    await asyncio.sleep(BACKOFF[min(failures - 1, 3)])
                    continue
                failures = 0
                unreplicated = self._unreplicated(batch, results)
                for item, result in zip(batch, results, strict=False):
                    if isinstance(item, StoredPublish) and not item.future.done():
                        if unreplicated is not None:  # stored and published, not durable
                            self.stats.publish_errors += 1
                            item.future.set_exception(HistoryTimeout(unreplicated))
                            item.future.exception()
                        elif isinstance(result, Exception):
                            item.future.set_exception(_refusal(item, result))
                            item.future.exception()
                        else:
                            item.future.set_result(
                                (int(result[0]), text(result[1]), len(result) > 2)
                            )
                self.stats.published += len(batch)

    async def _send(self, batch: list[PlainPublish | StoredPublish]) -> list[Any]:
        """One pipelined round trip: the history script goes as EVALSHA straight away
        (redis-py's Script in a pipeline asks SCRIPT EXISTS first: a round trip more per
        batch); a Redis that does not know it yet (restarted, a promoted replica: script
        caches are not replicated) answers NOSCRIPT, and those items go again as EVAL, in
        order, before anything after this batch."""
        # A hard bound on top of the connection's own deadlines (pool wait, connect,
        # each reply), so a batch can never hold the queue for long.
        async with asyncio.timeout(3 * self.connection.timeout):
            results = await self._one_trip(batch, "EVALSHA")
            again = [i for i, r in enumerate(results[: len(batch)]) if isinstance(r, NoScriptError)]
            if again:
                retry = await self._one_trip([batch[i] for i in again], "EVAL")
                for i, result in zip(again, retry, strict=False):
                    results[i] = result
                if len(results) > len(batch):  # each WAIT covers its own pipeline's writes
                    results[-1] = _fewer(results[-1], retry[-1])
            return results

    async def _one_trip(self, items: list[PlainPublish | StoredPublish], op: str) -> list[Any]:
        script = self._script.sha if op == "EVALSHA" else self._script.script
        async with self.connection.publishing.pipeline(transaction=False) as pipe:
            for item in items:
                if isinstance(item, PlainPublish):
                    pipe.publish(item.channel, item.data)
                else:
                    item.sent = True
                    pipe.execute_command(op, script, len(item.keys), *item.keys, *item.args)
            if self.wait_replicas and any(isinstance(i, StoredPublish) for i in items):
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            t0 = self.clock()
            results = await pipe.execute(raise_on_error=False)
            if self.observe is not None:
                self.observe(self.clock() - t0)
            return list(results)

    def _unreplicated(
        self, batch: list[PlainPublish | StoredPublish], results: list[Any]
    ) -> str | None:
        """Why the batch's stored publishes are not acknowledged (WAIT answered fewer
        replicas than wanted, or failed); None when they are (or no WAIT was sent)."""
        if len(results) == len(batch):
            return None
        acked = results[-1]
        if isinstance(acked, Exception):
            return f"WAIT failed: {acked}"
        if int(acked) < self.wait_replicas:
            self.stats.unreplicated += 1
            return f"stored on {int(acked)} of {self.wait_replicas} replicas in time"
        return None

    def _failed(
        self, batch: list[PlainPublish | StoredPublish], exc: BaseException, failures: int
    ) -> None:
        """Stored items fail to their callers; plain ones go back to the queue's head.

        The batch may have reached Redis before the failure (a reply that timed out, a
        connection lost while reading): its stored items' outcome is unknown, so their
        callers get ``HistoryTimeout`` (the client's ``timeout``), not a certain refusal."""
        retry = [item for item in batch if isinstance(item, PlainPublish)]
        if isinstance(exc, (TimeoutError, RedisTimeoutError)):
            self.unanswered()
        for item in batch:
            if isinstance(item, StoredPublish) and not item.future.done():
                item.future.set_exception(_refusal(item, exc))
                item.future.exception()
        self.stats.publish_errors += len(batch) - len(retry)
        self.queue.extendleft(reversed(retry))
        if failures == 1 or failures % 100 == 0:
            log.warning(
                "redis publish failed (%d stored refused, %d to retry): %r",
                len(batch) - len(retry),
                len(retry),
                exc,
            )

    async def flush(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        while self.queue and self.clock() < deadline:
            await asyncio.sleep(0.01)


def _fewer(first: Any, second: Any) -> Any:
    """Of two WAIT answers, the one that confirms less (an error confirms nothing)."""
    if isinstance(first, Exception):
        return first
    if isinstance(second, Exception):
        return second
    return min(int(first), int(second))


def _refusal(item: StoredPublish, exc: BaseException) -> HistoryUnavailable:
    """What the caller of a failed stored publish is told: certain (Redis answered with an
    error, or it was never sent) or unknown (sent, then the connection failed or timed out
    before the answer: it may have run)."""
    if isinstance(exc, HistoryUnavailable):
        return exc
    why = str(exc) or type(exc).__name__
    if item.sent and not isinstance(exc, ResponseError):
        return HistoryTimeout(why)
    return HistoryUnavailable(why)
