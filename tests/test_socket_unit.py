"""The Socket driven directly: frames in, frames out, no network, a clock the test
moves (the channel lifecycle of channels/lifecycle.py, the rate limits, crashes)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from roost.brokers.memory import MemoryBroker
from roost.channels import Channel, CloseSocket, Endpoint, JoinError, Limits, Reply, Router, Socket
from roost.channels.lifecycle import (
    ENDINGS,
    TRANSITIONS,
    ChannelEvent,
    ChannelState,
    LifecycleError,
    advance,
)
from roost.protocol import TEXT, V2, Encoded, Frame
from roost.pubsub import PubSub, WireKind

KIND = WireKind("test/v2", V2, lambda frame: frame.data)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """Collects what the socket writes, decoded."""

    kind = KIND

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []
        self.closed: tuple[int, str] | None = None

    def write(self, data: bytes) -> None:
        self.frames.append(orjson.loads(data))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[list[Any]]:
        out, self.frames = self.frames, []
        return out


ENDED: list[tuple[str, str]] = []


class Room(Channel):
    async def join(self, payload: Any) -> Any:
        if payload.get("refuse"):
            raise JoinError("no")
        gate = self.socket.endpoint.settings.get("gate")
        await self.subscribe()
        if gate is not None:
            await gate.wait()  # a slow join: broadcasts meanwhile are held back
        return {"hello": payload.get("user")}

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event == "boom":
            raise RuntimeError("boom")
        if event == "shout":
            await self.broadcast("shout", payload)
        return Reply.ok(payload)

    async def terminate(self, reason: str) -> None:
        ENDED.append((self.topic, reason))


@pytest.fixture
async def rig() -> Any:
    ENDED.clear()
    clock = Clock()
    endpoint = Endpoint(
        router=Router().channel("room:*", Room),
        pubsub=PubSub("unit", MemoryBroker()),
        limits=Limits(msg_rate=2, msg_burst=2, join_rate=0, abuse_limit=3),
        clock=clock,
    )
    await endpoint.start()
    wire = Wire()
    socket = Socket(endpoint, wire, {})
    yield socket, wire, clock
    await socket.close()
    await endpoint.stop()


async def send(socket: Socket, join_ref: str | None, ref: str, topic: str, event: str,
               payload: Any) -> None:  # fmt: skip
    await socket.handle(TEXT, orjson.dumps([join_ref, ref, topic, event, payload]).decode())


def reply(frame: list[Any]) -> tuple[str, Any]:
    assert frame[3] == "phx_reply", frame
    return frame[4]["status"], frame[4]["response"]


async def test_join_leave_and_the_states_they_pass(rig: Any) -> None:
    socket, wire, _ = rig
    await send(socket, "1", "1", "room:a", "phx_join", {"user": "al"})
    assert [reply(f) for f in wire.take()] == [("ok", {"hello": "al"})]
    channel = socket.channels["room:a"]
    assert channel.state is ChannelState.JOINED and channel.subscribed
    await send(socket, "1", "2", "room:a", "phx_leave", {})
    frames = wire.take()
    assert reply(frames[0]) == ("ok", {}) and frames[1][3] == "phx_close"
    assert channel.state is ChannelState.CLOSED and not channel.subscribed
    assert ENDED == [("room:a", "leave")] and "room:a" not in socket.channels


async def test_a_second_join_replaces_the_first(rig: Any) -> None:
    socket, wire, _ = rig
    await send(socket, "1", "1", "room:a", "phx_join", {})
    first = socket.channels["room:a"]
    await send(socket, "5", "5", "room:a", "phx_join", {})
    frames = wire.take()
    assert frames[1][:4] == ["1", "1", "room:a", "phx_close"]  # the old join_ref
    assert reply(frames[2])[0] == "ok" and frames[2][0] == "5"
    assert first.state is ChannelState.CLOSED and ENDED == [("room:a", "replaced")]
    assert socket.endpoint.pubsub.subscribers("room:a") == 1


async def test_a_refused_join_leaves_nothing(rig: Any) -> None:
    socket, wire, _ = rig
    await send(socket, "1", "1", "room:a", "phx_join", {"refuse": True})
    assert [reply(f) for f in wire.take()] == [("error", {"reason": "no"})]
    assert socket.channels == {} and socket.endpoint.pubsub.subscribers("room:a") == 0
    assert ENDED == []  # never joined: no terminate


async def test_a_crash_errors_the_channel_not_the_socket(rig: Any) -> None:
    socket, wire, _ = rig
    await send(socket, "1", "1", "room:a", "phx_join", {})
    channel = socket.channels["room:a"]
    wire.take()
    await send(socket, "1", "2", "room:a", "boom", {})
    assert wire.take()[0][3] == "phx_error"
    assert channel.state is ChannelState.CLOSED and ENDED == [("room:a", "crash")]
    await send(socket, None, "3", "phoenix", "heartbeat", {})
    assert reply(wire.take()[0])[0] == "ok"


async def test_the_join_reply_comes_before_any_broadcast(rig: Any) -> None:
    socket, wire, _ = rig
    other = Wire()
    peer = Socket(socket.endpoint, other, {})
    await send(peer, "1", "1", "room:a", "phx_join", {})
    gate = socket.endpoint.settings["gate"] = asyncio.Event()
    joining = asyncio.create_task(send(socket, "9", "9", "room:a", "phx_join", {}))
    await asyncio.sleep(0)
    socket.endpoint.settings.pop("gate")
    await send(peer, "1", "2", "room:a", "shout", {"n": 1})  # while the join is held
    assert wire.frames == []
    gate.set()
    await joining
    frames = wire.take()
    assert reply(frames[0])[0] == "ok" and frames[1][2:] == ["room:a", "shout", {"n": 1}]
    await peer.close()


async def test_rate_limits_follow_the_clock_without_sleeping(rig: Any) -> None:
    socket, wire, clock = rig
    await send(socket, "1", "1", "room:a", "phx_join", {})
    wire.take()
    for n in range(3):
        await send(socket, "1", f"p{n}", "room:a", "echo", {"n": n})
    assert [reply(f)[0] for f in wire.take()] == ["ok", "ok", "error"]
    clock.now += 0.5  # 2/s: one token back
    await send(socket, "1", "p3", "room:a", "echo", {})
    assert reply(wire.take()[0])[0] == "ok"
    # Three limited pushes in a row (the abuse limit): the socket is closed, 1008.
    with pytest.raises(CloseSocket) as closing:
        for n in range(4):
            await send(socket, "1", f"q{n}", "room:a", "echo", {})
    assert closing.value.code == 1008


async def test_closing_the_socket_ends_every_channel(rig: Any) -> None:
    socket, _, _ = rig
    for topic in ("room:a", "room:b"):
        await send(socket, "1", "1", topic, "phx_join", {})
    await socket.close()
    assert sorted(ENDED) == [("room:a", "closed"), ("room:b", "closed")]
    assert all(c.state is ChannelState.CLOSED for c in socket.channels.values())


def test_the_lifecycle_table() -> None:
    assert advance(ChannelState.JOINING, ChannelEvent.JOIN_OK) is ChannelState.JOINED
    for event in ENDINGS:
        assert advance(ChannelState.JOINED, event) is ChannelState.CLOSED
    assert all(state is not ChannelState.CLOSED for state, _ in TRANSITIONS)  # final
    with pytest.raises(LifecycleError):
        advance(ChannelState.CLOSED, ChannelEvent.LEAVE)
    with pytest.raises(LifecycleError):
        advance(ChannelState.JOINING, ChannelEvent.LEAVE)


def test_frames_are_what_the_serializer_packs() -> None:
    frame = V2.broadcast("room:a", "e", Encoded.of({"a": 1}))
    assert isinstance(frame, Frame) and orjson.loads(KIND.pack(frame)) == [
        None, None, "room:a", "e", {"a": 1}
    ]  # fmt: skip


async def test_broadcast_from_skips_only_the_sender(rig: Any) -> None:
    socket, wire, _ = rig
    other = Wire()
    peer = Socket(socket.endpoint, other, {})
    await send(socket, "1", "1", "room:a", "phx_join", {})
    await send(peer, "1", "1", "room:a", "phx_join", {})
    wire.take(), other.take()
    channel = socket.channels["room:a"]
    await channel.broadcast_from("said", {"x": 1})
    assert wire.frames == [] and other.take()[0][2:] == ["room:a", "said", {"x": 1}]
    await peer.close()


def test_the_client_channel_table() -> None:
    from roost.client.states import TRANSITIONS as CLIENT
    from roost.client.states import ChannelEvent as CE
    from roost.client.states import ChannelState as CS
    from roost.client.states import advance as client_advance

    assert client_advance(CS.CLOSED, CE.JOIN) == "joining"  # phoenix.js's strings
    assert client_advance(CS.JOINING, CE.FAILED) is CS.ERRORED
    assert all((state, CE.CLOSED) in CLIENT for state in CS)
    with pytest.raises(RuntimeError):
        client_advance(CS.JOINED, CE.JOINED)
