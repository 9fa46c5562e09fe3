"""The fan-out: one broadcast (or a run of them) written to many subscribers' wires.

``fastlane`` encodes a frame once per wire kind and writes the same bytes to every
subscriber; ``fastlane_run`` does it for several broadcasts of one topic at once (one
joined write per byte-stream wire); a topic's ``Plan`` groups its plain subscribers'
wires by kind so a broadcast is one ``write_all`` loop per kind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..protocol import Encoded
from .envelope import Envelope
from .wire import Subscriber, WireKind

log = logging.getLogger("roost.pubsub")


def fastlane(
    subs: dict[Subscriber, None] | list[Subscriber],
    topic: str,
    event: str,
    payload: Encoded,
    exclude: object = None,
) -> int:
    """Write one broadcast to every subscriber; return how many got it.

    The frame is encoded once per wire kind in use (usually one) and the same bytes
    go to every subscriber's wire: no per-subscriber JSON, no await, no task.
    Subscribers that intercept the event get it through ``handle_out`` instead.
    """
    frames: dict[WireKind, bytes | None] = {}
    last_kind: WireKind | None = None
    last_data: bytes | None = None
    sent = 0
    for sub in subs:
        if sub is exclude:
            continue
        if sub.intercept and event in sub.intercept:
            _handle_out(sub, event, payload)
            sent += 1
            continue
        wire = sub.wire
        kind = wire.kind
        if kind is not last_kind:
            if kind in frames:
                last_data = frames[kind]
            else:
                last_data = frames[kind] = kind.broadcast(topic, event, payload)
            last_kind = kind
        if last_data is not None:
            wire.write(last_data)
            sent += 1
    return sent


def fastlane_run(
    subs: dict[Subscriber, None] | list[Subscriber], topic: str, envs: Sequence[Envelope]
) -> int:
    """Several broadcasts to one topic that arrived together, in order; return deliveries.

    Each frame is encoded once per wire kind in use, and for byte-stream wires (a
    WebSocket) the frames are joined once: every subscriber gets the whole run in one
    write, one system call for the run instead of one per message. Subscribers that
    intercept one of the events, and wires that take one message per write
    (long-poll), get the messages one by one, in the same order.
    """
    events = {env.event for env in envs}  # (``in intercept``: it may match anything)
    frames: dict[WireKind, list[bytes | None]] = {}
    joined: dict[WireKind, tuple[bytes, int]] = {}
    last_kind: WireKind | None = None
    last_data = b""
    last_count = 0
    sent = 0
    for sub in subs:
        intercept = sub.intercept
        if intercept and any(event in intercept for event in events):
            for i, env in enumerate(envs):
                if env.event in intercept:
                    _handle_out(sub, env.event, env.payload)
                    sent += 1
                    continue
                wire = sub.wire
                frame = (frames.get(wire.kind) or _frames(wire.kind, topic, envs, frames))[i]
                if frame is not None:
                    wire.write(frame)
                    sent += 1
            continue
        wire = sub.wire
        kind = wire.kind
        if not kind.stream:
            for frame in frames.get(kind) or _frames(kind, topic, envs, frames):
                if frame is not None:
                    wire.write(frame)
                    sent += 1
            continue
        if kind is not last_kind:
            if kind not in joined:
                present = [f for f in frames.get(kind) or _frames(kind, topic, envs, frames) if f]
                joined[kind] = (b"".join(present), len(present))
            last_data, last_count = joined[kind]
            last_kind = kind
        if last_count:
            wire.write(last_data)
            sent += last_count
    return sent


class Plan:
    """A topic's subscribers arranged for the fastlane, rebuilt after any (un)subscribe.

    Subscribers that intercept nothing and whose wire kind has a ``write_all`` are kept
    as one list of wires per kind: a broadcast is then one ``write_all`` per kind, one
    loop over the wires, no per-subscriber checks. The rest (intercepting channels,
    long-poll listeners) go through ``fastlane``.
    """

    __slots__ = ("groups", "others")

    def __init__(self, subs: dict[Subscriber, None]) -> None:
        self.groups: dict[WireKind, list[Any]] = {}
        self.others: list[Subscriber] = []
        for sub in subs:
            wire = None if sub.intercept else sub.wire
            if wire is not None and wire.kind.write_all is not None:
                self.groups.setdefault(wire.kind, []).append(wire)
            else:
                self.others.append(sub)

    def broadcast(
        self, topic: str, event: str, payload: Encoded, exclude: Subscriber | None = None
    ) -> int:
        """One broadcast to every subscriber of the topic, ``exclude`` (a
        ``broadcast_from``'s sender) skipped: a topic's subscribers have one wire each,
        so the sender is found by its wire."""
        sent = 0
        skip = None if exclude is None else exclude.wire
        for kind, wires in self.groups.items():
            data = kind.broadcast(topic, event, payload)
            if data is not None:
                assert kind.write_all is not None
                if skip is not None:
                    wires = [w for w in wires if w is not skip]
                sent += kind.write_all(wires, data)
        if self.others:
            sent += fastlane(self.others, topic, event, payload, exclude)
        return sent

    def broadcast_run(self, topic: str, envs: Sequence[Envelope]) -> int:
        """Several broadcasts at once, in order: on a byte stream, one joined write."""
        sent = 0
        for kind, wires in self.groups.items():
            assert kind.write_all is not None
            frames = [f for env in envs if (f := kind.broadcast(topic, env.event, env.payload))]
            if not frames:
                continue
            if kind.stream:
                kind.write_all(wires, b"".join(frames))
            else:
                for frame in frames:
                    kind.write_all(wires, frame)
            sent += len(wires) * len(frames)
        if self.others:
            sent += fastlane_run(self.others, topic, envs)
        return sent


def _handle_out(sub: Subscriber, event: str, payload: Encoded) -> None:
    """An intercepting subscriber's callback; its failure costs no one else anything."""
    try:
        sub.handle_out(event, payload)
    except Exception:
        log.exception("handle_out of %r failed for %s", sub, event)


def _frames(
    kind: WireKind, topic: str, envs: Sequence[Envelope], cache: dict[WireKind, list[bytes | None]]
) -> list[bytes | None]:
    own = cache[kind] = [kind.broadcast(topic, env.event, env.payload) for env in envs]
    return own
