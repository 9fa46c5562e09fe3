"""The per-topic cursor's state table, driven directly (the fault suite drives it
through real Redis faults; here every transition is taken on purpose)."""

from __future__ import annotations

import asyncio

import pytest

from roost.brokers.redis.cursor import TRANSITIONS, Cursors, Event, State
from roost.brokers.redis.stats import BrokerStats
from roost.protocol import Encoded
from roost.pubsub import Envelope, StoredMessage


class Stream:
    """A topic's history as the catch-up read sees it."""

    def __init__(self) -> None:
        self.epoch: str | None = "e1"
        self.messages: list[StoredMessage] = []
        self.reads = 0
        self.fail = 0

    def add(self, offset: int) -> None:
        self.messages.append(StoredMessage(offset, "m", b'{"offset":%d}' % offset, 0))

    async def read(
        self, topic: str, epoch: str | None, after: int, count: int
    ) -> tuple[str | None, int, list[StoredMessage]]:
        self.reads += 1
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("down")
        if self.epoch is None:
            return None, 0, []
        top = self.messages[-1].offset if self.messages else 0
        start = after if epoch == self.epoch else 0
        return self.epoch, top, [m for m in self.messages if m.offset > start][:count]


def env(offset: int | None, epoch: str = "e1") -> Envelope:
    return Envelope("n", 0, "t", "m", Encoded.of({}), None, offset, epoch)


@pytest.fixture
def setup() -> tuple[Stream, Cursors, list[int | None]]:
    stream = Stream()
    got: list[int | None] = []
    cursors = Cursors(stream.read, lambda e: got.append(e.offset), BrokerStats())
    return stream, cursors, got


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_table_has_no_way_out_of_a_forgotten_topic() -> None:
    # Every state can be lost; PENDING only leaves by being positioned.
    assert {s for (s, e) in TRANSITIONS if e is Event.LOST} == set(State)
    assert {e for (s, e) in TRANSITIONS if s is State.PENDING} == {
        Event.POSITIONED,
        Event.LOST,
        Event.CONFIRMED,
    }


async def test_in_order_duplicates_and_a_gap_filled(setup: tuple) -> None:
    stream, cursors, got = setup
    for i in range(1, 6):
        stream.add(i)
    c = cursors.open("t")
    cursors.positioned(c, "e1", 2)
    cursors.message(env(3))
    cursors.message(env(3))  # duplicate
    cursors.message(env(5))  # 4 is missing: filled from the stream
    assert c.state is State.FILLING
    cursors.message(env(6))  # queued behind the fill
    stream.add(6)
    await settle()
    assert got == [3, 4, 5, 6] and c.state is State.LIVE
    assert cursors.stats.duplicates >= 1 and cursors.stats.offset_gaps == 1


async def test_queued_while_pending_then_applied(setup: tuple) -> None:
    _, cursors, got = setup
    c = cursors.open("t")
    cursors.message(env(2))  # stale (before the position): a duplicate once positioned
    cursors.message(env(4))
    assert got == []
    cursors.positioned(c, "e1", 3)
    assert got == [4]


async def test_catch_up_after_a_lost_subscription(setup: tuple) -> None:
    stream, cursors, got = setup
    c = cursors.open("t")
    cursors.positioned(c, "e1", 0)
    stream.add(1)
    cursors.message(env(1))
    cursors.lost()
    assert c.state is State.DETACHED
    stream.add(2)
    stream.add(3)  # stored while the subscription was down, the room then quiet
    cursors.confirmed(c)
    await settle()
    assert got == [1, 2, 3] and c.state is State.LIVE


async def test_a_new_epoch_is_delivered_from_its_first_offset(setup: tuple) -> None:
    stream, cursors, got = setup
    c = cursors.open("t")
    cursors.positioned(c, "e1", 7)
    cursors.lost()
    stream.epoch, stream.messages = "e2", []
    for i in (1, 2, 3):
        stream.add(i)
    cursors.confirmed(c)
    await settle()
    assert got == [1, 2, 3] and (c.epoch, c.offset) == ("e2", 3)
    cursors.message(env(4, "e2"))
    assert got[-1] == 4


async def test_a_failed_read_is_retried_not_dropped(setup: tuple) -> None:
    stream, cursors, got = setup
    c = cursors.open("t")
    cursors.positioned(c, "e1", 0)
    stream.add(1)
    stream.fail = 2
    cursors.lost()
    cursors.confirmed(c)
    for _ in range(50):
        await asyncio.sleep(0.05)
        if got:
            break
    assert got == [1] and stream.reads == 3


async def test_forgotten_on_unsubscribe(setup: tuple) -> None:
    stream, cursors, got = setup
    c = cursors.open("t")
    cursors.positioned(c, "e1", 5)
    cursors.forget("t")
    c2 = cursors.open("t")
    cursors.positioned(c2, "e1", 20)
    cursors.message(env(21))  # no replay of 6..20
    assert got == [21] and stream.reads == 0


async def test_an_impossible_transition_raises(setup: tuple) -> None:
    _, cursors, _ = setup
    c = cursors.open("t")
    with pytest.raises(RuntimeError):
        c.move(Event.FILLED)


async def test_messages_gone_from_the_stream_end_the_topic_here() -> None:
    stream = Stream()
    got: list[int | None] = []
    lost: list[str] = []
    cursors = Cursors(stream.read, lambda e: got.append(e.offset), BrokerStats(), lost=lost.append)
    c = cursors.open("t")
    cursors.positioned(c, "e1", 2)
    cursors.lost()
    for i in range(8, 11):  # 3..7 were trimmed away while the node was detached
        stream.add(i)
    cursors.confirmed(c)
    await settle()
    assert lost == ["t"] and cursors.stats.unfillable == 5
