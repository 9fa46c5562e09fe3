"""Delivery of envelopes that arrive together: runs per topic, one write per stream wire."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.brokers.memory import MemoryBroker
from roost.protocol import V1, V2, Encoded, ws_bytes
from roost.pubsub import Envelope, PubSub, WireKind
from roost.pubsub.fanout import fastlane_run
from roost.server.wswire import WS_V2, Flusher, WsWire

from support import RedisProcess, until

LP = WireKind("lp/v2", V2, lambda frame: frame.data)  # one message per write
# Byte-stream kinds without write_all: their subscribers take fastlane's general path.
S2 = WireKind("s/v2", V2, ws_bytes, stream=True)
S1 = WireKind("s/v1", V1, ws_bytes, stream=True)


class Wire:
    def __init__(self, kind: WireKind) -> None:
        self.kind = kind
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self, code: int, reason: str) -> None:
        pass


class Sub:
    def __init__(self, kind: WireKind, intercept: frozenset[str] = frozenset()) -> None:
        self.wire = Wire(kind)
        self.intercept = intercept
        self.out: list[tuple[str, Any]] = []

    def handle_out(self, event: str, payload: Encoded) -> None:
        self.out.append((event, payload.value()))
        self.wire.write(b"<out:" + event.encode() + b">")


def env(topic: str, event: str, n: int, **kw: Any) -> Envelope:
    return Envelope("other", n, topic, event, Encoded.of({"n": n}), **kw)


def ws_frame(kind: WireKind, e: Envelope) -> bytes:
    serializer = V1 if kind is S1 else V2
    frame = serializer.broadcast(e.topic, e.event, e.payload)
    assert frame is not None
    data: bytes = ws_bytes(frame)
    return data


def test_a_run_is_one_write_per_stream_wire_and_keeps_order_elsewhere() -> None:
    envs = [env("t", "a", 1), env("t", "b", 2), env("t", "a", 3)]
    v2a, v2b, v1, lp = Sub(S2), Sub(S2), Sub(S1), Sub(LP)
    picky = Sub(S2, frozenset({"b"}))
    subs = [v2a, picky, v1, v2b, lp]

    sent = fastlane_run(subs, "t", envs)

    assert sent == 3 * len(subs)
    joined_v2 = b"".join(ws_frame(S2, e) for e in envs)
    assert v2a.wire.writes == [joined_v2] and v2b.wire.writes == [joined_v2]
    assert v2a.wire.writes[0] is v2b.wire.writes[0]  # joined once, shared
    assert v1.wire.writes == [b"".join(ws_frame(S1, e) for e in envs)]
    assert lp.wire.writes == [ws_frame(S2, e)[2:] for e in envs]  # one per message
    # The subscriber intercepting "b" gets a, then b through handle_out, then a: in order.
    assert picky.wire.writes == [ws_frame(S2, envs[0]), b"<out:b>", ws_frame(S2, envs[2])]
    assert picky.out == [("b", {"n": 2})]


def test_a_listener_that_intercepts_everything_has_no_wire() -> None:
    from roost.server.longpoll import Listener

    got: list[tuple[str, Any]] = []
    listener = Listener(lambda event, payload: got.append((event, payload.value())))
    envs = [env("t", "a", 1), env("t", "b", 2)]
    assert fastlane_run([listener], "t", envs) == 2
    assert got == [("a", {"n": 1}), ("b", {"n": 2})]


def test_deliver_splits_by_topic_and_keeps_a_broadcast_from_apart() -> None:
    pubsub = PubSub("me", MemoryBroker())
    both, only_t = Sub(S2), Sub(S2)
    pubsub._topics = {"t": {both: None, only_t: None}, "u": {both: None}}
    own_from = Envelope("me", 9, "t", "a", Encoded.of({"n": 5}), exclude=str(id(only_t)))
    pubsub._senders[str(id(only_t))] = only_t  # as its broadcast_from registered it
    envs = [env("t", "a", 1), env("t", "a", 2), env("u", "a", 3), env("t", "a", 4), own_from]

    pubsub._deliver(envs)

    f = [ws_frame(S2, e) for e in envs]
    # Runs: t[1, 2], u[3], t[4], then the excluding one alone — order kept for `both`.
    assert both.wire.writes == [f[0] + f[1], f[2], f[3], f[4]]
    assert only_t.wire.writes == [f[0] + f[1], f[3]]  # excluded from its own broadcast_from
    assert pubsub.delivered == 8


async def test_redis_broker_hands_over_a_burst_together(redis_server: RedisProcess) -> None:
    from roost.brokers.redis import RedisBroker
    from roost.brokers.redis.broker import MAX_BATCH

    sender = RedisBroker(redis_server.url, mode="topic")
    receiver = RedisBroker(redis_server.url, mode="topic")
    batches: list[list[Envelope]] = []
    await sender.start("s", lambda envs: None)
    await receiver.start("r", lambda envs: batches.append(list(envs)))
    try:
        await receiver.subscribe("room")
        for n in range(1000):  # queued in one loop turn: sent in one pipelined round trip
            await sender.publish(Envelope("s", 0, "room", "m", Encoded.of({"n": n})))
        await until(lambda: sum(map(len, batches)) == 1000, 10, "1000 messages")
        got = [e.payload.value()["n"] for batch in batches for e in batch]
        assert got == list(range(1000))
        assert max(map(len, batches)) > 1  # read together, handed over together
        assert max(map(len, batches)) <= MAX_BATCH
        await asyncio.sleep(0.05)
        assert sum(map(len, batches)) == 1000
    finally:
        await sender.stop()
        await receiver.stop()


class Transport:
    """The transport end of a WsWire: records what is written."""

    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Joined:
    """A joined channel as the registry sees it, on a real WsWire."""

    intercept: frozenset[str] = frozenset()

    def __init__(self, flusher: Flusher, buffered: int = 0) -> None:
        self.transport = Transport(buffered)
        self.wire = WsWire(WS_V2, self.transport, 1000, None, flusher)

    def handle_out(self, event: str, payload: Encoded) -> None:
        raise AssertionError("not intercepting")


async def test_the_plan_writes_each_wire_once_per_turn_and_follows_joins() -> None:
    pubsub = PubSub("me", MemoryBroker())
    flusher = Flusher()
    a, b, slow = Joined(flusher), Joined(flusher), Joined(flusher, buffered=5000)
    lp, picky = Sub(LP), Sub(WS_V2, frozenset({"m"}))
    for sub in (a, b, slow, lp, picky):
        await pubsub.subscribe("t", sub)
    one, two = Encoded.of({"n": 1}), Encoded.of({"n": 2})
    f1, f2 = (ws_frame(WS_V2, Envelope("x", 0, "t", "m", p)) for p in (one, two))

    assert pubsub.local_broadcast("t", "m", one) == 5
    assert pubsub.local_broadcast("t", "m", two) == 5  # same loop turn: held
    assert a.transport.writes == [f1] and b.transport.writes == [f1]
    flusher.flush()  # the end of the turn
    assert a.transport.writes == [f1, f2] and b.transport.writes == [f1, f2]
    # Over its buffer limit: cut off with 1013, nothing more written to it.
    assert slow.transport.writes[-1][:4] == b"\x88\x0f\x03\xf5" and slow.wire.closed
    assert lp.wire.writes == [f1[2:], f2[2:]]
    assert picky.out == [("m", {"n": 1}), ("m", {"n": 2})]

    late = Joined(flusher)
    await pubsub.subscribe("t", late)
    pubsub.unsubscribe("t", a)
    await asyncio.sleep(0)  # a new turn (the Flusher's call_soon ran)
    pubsub.local_broadcast("t", "m", one)
    assert late.transport.writes == [f1] and a.transport.writes == [f1, f2]
    assert b.transport.writes == [f1, f2, f1]
