"""Per-topic cursors: how a node delivers a topic's stored broadcasts exactly once, in order.

The history stream is the source of truth for stored topics. Each topic this node is
subscribed to has a cursor — the (epoch, offset) of the last stored broadcast handed
to local subscribers — and a state:

    PENDING   subscribing: the position is not known yet; broadcasts are queued
    LIVE      broadcasts are applied in offset order: the next one is delivered, an
              older one is a duplicate, a jump (or a new epoch not starting at 1) is
              a gap
    FILLING   reading the stream after the cursor (a gap, or a catch-up after a
              (re)subscribe); broadcasts are queued and applied after it
    DETACHED  the subscription was lost; nothing arrives until it is confirmed again

Every (re)subscribe catches the topic up from its cursor, so what was stored while
the subscription was down (a Redis restart, a failover, a probe restart) is
delivered late, never dropped; a new epoch (Redis lost the history) is delivered
from its first offset. A cursor is forgotten when the node unsubscribes: the next
subscribe starts from the topic's position then, and replays nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ...protocol import Encoded
from ...pubsub import Envelope
from ...pubsub.history import HistoryUnavailable, StoredMessage
from .connection import BACKOFF, REDIS_ERRORS
from .stats import BrokerStats

log = logging.getLogger("roost.redis")

FILL_BATCH = 1000  # stream entries per read while catching up


class State(enum.Enum):
    PENDING = "pending"
    LIVE = "live"
    FILLING = "filling"
    DETACHED = "detached"


class Event(enum.Enum):
    POSITIONED = "positioned"  # the topic's position was read after its SUBSCRIBE
    GAP = "gap"  # a broadcast after a hole (or of a new epoch)
    FILLED = "filled"  # the stream was read up to the topic's top
    LOST = "lost"  # the subscriber connection went away
    CONFIRMED = "confirmed"  # Redis confirmed the (re)subscription


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.PENDING, E.POSITIONED): S.LIVE,
    (S.PENDING, E.LOST): S.PENDING,
    (S.PENDING, E.CONFIRMED): S.PENDING,
    (S.LIVE, E.GAP): S.FILLING,
    (S.LIVE, E.LOST): S.DETACHED,
    (S.LIVE, E.CONFIRMED): S.FILLING,  # resubscribed without a loss seen: catch up anyway
    (S.FILLING, E.FILLED): S.LIVE,
    (S.FILLING, E.LOST): S.DETACHED,
    (S.FILLING, E.CONFIRMED): S.FILLING,  # once more after this pass
    (S.DETACHED, E.CONFIRMED): S.FILLING,
    (S.DETACHED, E.LOST): S.DETACHED,
}

# (topic, cursor epoch or None, after offset, at most N entries) →
# (the topic's epoch or None when it has no history, its top offset, entries[, the
# offset they follow: where another epoch continues the cursor or begins; a reader
# without it means 0, an epoch delivered from its first offset])
Reader = Callable[
    [str, str | None, int, int],
    Awaitable[
        tuple[str | None, int, list[StoredMessage]]
        | tuple[str | None, int, list[StoredMessage], int]
    ],
]


@dataclass(slots=True, eq=False)
class Cursor:
    topic: str
    state: State = State.PENDING
    epoch: str | None = None
    offset: int = 0
    queue: list[Envelope] = field(default_factory=list)
    again: bool = False  # confirmed again while filling: one more pass
    generation: int = 0  # the fill task that owns the cursor
    confirmed: asyncio.Future[None] | None = None
    # While PENDING after its first confirmation: the subscription was lost (and not
    # confirmed again yet), or confirmed again — so once positioned, the cursor is
    # DETACHED, or catches up at once: nothing published meanwhile is missed.
    detached: bool = False
    recheck: bool = False

    def move(self, event: Event) -> None:
        """Take a transition of the table; anything else is a bug and raises."""
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(
                f"cursor {self.topic}: no transition {self.state} --{event}"
            ) from None


class Cursors:
    """The cursors of every subscribed topic, and their catch-ups."""

    def __init__(
        self,
        read: Reader,
        emit: Callable[[Envelope], None],
        stats: BrokerStats,
        trusted: Callable[[StoredMessage, str], bool] = lambda m, t: True,
        lost: Callable[[str], None] = lambda topic: None,
    ) -> None:
        self.read = read
        self.emit = emit
        self.lost_topic = lost
        self.stats = stats
        self.trusted = trusted
        self.topics: dict[str, Cursor] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle of a topic ----------------------------------------------------------
    def open(self, topic: str) -> Cursor:
        cursor = self.topics[topic] = Cursor(topic)
        cursor.confirmed = asyncio.get_running_loop().create_future()
        return cursor

    def forget(self, topic: str) -> None:
        cursor = self.topics.pop(topic, None)
        if cursor is not None:
            cursor.generation += 1  # a running fill stops at its next step
            if cursor.confirmed is not None and not cursor.confirmed.done():
                cursor.confirmed.set_exception(HistoryUnavailable("unsubscribed while subscribing"))
                cursor.confirmed.exception()  # retrieved: the subscriber may be gone

    def positioned(self, cursor: Cursor, epoch: str | None, offset: int) -> None:
        """The position read after the SUBSCRIBE: live from here, queued ones applied
        (or, if the subscription was lost or confirmed again meanwhile, detached or
        caught up from here)."""
        cursor.epoch, cursor.offset = epoch, offset
        cursor.move(Event.POSITIONED)
        if cursor.detached:
            cursor.move(Event.LOST)
        elif cursor.recheck:
            cursor.recheck = False
            self.confirmed(cursor)
        else:
            self._drain(cursor)

    def confirmed(self, cursor: Cursor) -> None:
        if cursor.state is State.PENDING:
            if cursor.confirmed is not None and not cursor.confirmed.done():
                cursor.confirmed.set_result(None)
            else:  # confirmed again while its position is being read
                cursor.detached, cursor.recheck = False, True
            return
        if cursor.state is State.FILLING:
            cursor.again = True
        cursor.move(Event.CONFIRMED)
        if cursor.state is State.FILLING and not cursor.again:
            self.stats.catch_ups += 1
            self._start_fill(cursor)

    def lost(self, topics: Iterable[str] | None = None) -> None:
        """The subscription of ``topics`` (default: every topic) went away."""
        cursors = (
            self.topics.values()
            if topics is None
            else [c for c in map(self.topics.get, topics) if c is not None]
        )
        for cursor in cursors:
            cursor.again = False
            if cursor.state is State.PENDING and cursor.confirmed and cursor.confirmed.done():
                cursor.detached, cursor.recheck = True, False
            cursor.move(Event.LOST)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1)

    # -- broadcasts ------------------------------------------------------------------
    def message(self, env: Envelope) -> None:
        cursor = self.topics.get(env.topic)
        if cursor is None:  # not subscribed here (global mode): PubSub has no one for it
            self.emit(env)
        elif cursor.state is State.LIVE:
            self._apply(cursor, env)
        else:
            cursor.queue.append(env)

    def _apply(self, cursor: Cursor, env: Envelope) -> None:
        offset = env.offset
        if offset is None:  # not stored: no order to keep but the arrival order
            self.emit(env)
            return
        if env.epoch == cursor.epoch:
            if offset == cursor.offset + 1:
                cursor.offset = offset
                self.emit(env)
                return
            if offset <= cursor.offset:
                self.stats.duplicates += 1
                return
        elif offset == 1:  # a new epoch, from its start
            cursor.epoch, cursor.offset = env.epoch, 1
            self.emit(env)
            return
        self.stats.offset_gaps += 1
        log.warning(
            "offset gap on %s: have %s/%d, got %s/%d; filling from the stream",
            cursor.topic,
            cursor.epoch,
            cursor.offset,
            env.epoch,
            offset,
        )
        cursor.queue.append(env)
        cursor.move(Event.GAP)
        self._start_fill(cursor)

    def _drain(self, cursor: Cursor, stale: int = 0) -> None:
        """Apply what was queued; a new gap queues the rest again, in order.

        The first ``stale`` items were queued before the fill's last read: a stored one
        of another epoch than the one read belongs to a history that is gone (Redis
        lost it meanwhile) and is dropped — applied, it would look like a gap forever.
        """
        queue, cursor.queue = cursor.queue, []
        for i, env in enumerate(queue):
            if i < stale and env.offset is not None and env.epoch != cursor.epoch:
                self.stats.duplicates += 1
                continue
            if cursor.state is State.LIVE:
                self._apply(cursor, env)
            else:
                cursor.queue.append(env)

    # -- filling -----------------------------------------------------------------------
    def _start_fill(self, cursor: Cursor) -> None:
        cursor.generation += 1
        task = asyncio.get_running_loop().create_task(
            self._fill(cursor, cursor.generation), name=f"roost-fill-{cursor.topic}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _owns(self, cursor: Cursor, generation: int) -> bool:
        return (
            cursor.generation == generation
            and cursor.state is State.FILLING
            and self.topics.get(cursor.topic) is cursor
        )

    async def _fill(self, cursor: Cursor, generation: int) -> None:
        """Deliver everything stored after the cursor, then what was queued meanwhile."""
        attempt = 0
        while True:
            if not self._owns(cursor, generation):
                return  # lost (a later confirmation starts again) or forgotten
            cursor.again = False
            stale = len(cursor.queue)
            try:
                epoch, top, entries, *start = await self.read(
                    cursor.topic, cursor.epoch, cursor.offset, FILL_BATCH
                )
            except REDIS_ERRORS as exc:
                log.warning("catching up %s failed, retrying: %r", cursor.topic, exc)
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            if not self._owns(cursor, generation):
                return
            if epoch is None:  # the topic has no history any more: start again from 0
                cursor.epoch, cursor.offset = None, 0
            else:
                self._deliver(cursor, epoch, top, entries, start[0] if start else 0)
                if len(entries) >= FILL_BATCH or cursor.again:
                    continue
            break
        cursor.move(Event.FILLED)
        self._drain(cursor, stale)

    def _deliver(
        self, cursor: Cursor, epoch: str, top: int, entries: list[StoredMessage], start: int
    ) -> None:
        if epoch != cursor.epoch:  # another epoch: from where it continues us, or begins
            cursor.epoch, cursor.offset = epoch, start
        topic = cursor.topic
        for m in entries:
            if m.offset <= cursor.offset:
                continue
            if m.offset > cursor.offset + 1:
                self._unfillable(cursor, m.offset - cursor.offset - 1)
            cursor.offset = m.offset
            if self.trusted(m, topic):
                self.stats.filled += 1
                self.emit(
                    Envelope("", 0, topic, m.event, Encoded(m.payload), None, m.offset, epoch)
                )
        if len(entries) < FILL_BATCH and top > cursor.offset:
            self._unfillable(cursor, top - cursor.offset)
            cursor.offset = top

    def _unfillable(self, cursor: Cursor, count: int) -> None:
        """Messages left the stream before they could be delivered: the local members
        cannot have them in order any more. They are told (``lost``: their channels
        crash, they rejoin with ``since`` and recover or get ``recovered: false``)."""
        self.stats.unfillable += count
        log.warning(
            "%d message(s) on %s left the stream before they could be delivered: "
            "its local members must rejoin",
            count,
            cursor.topic,
        )
        self.lost_topic(cursor.topic)
