"""History: what a broker keeps per topic, and what a rejoining client gets back.

Every stored broadcast gets the topic's next ``offset``; a topic's history also has
an ``epoch``, which changes whenever the history was lost (a new Redis, a memory
broker restarted). A client that saw offset N of epoch E asks for everything after
N: it gets all of it (``recovered``), or — when the epoch changed or the messages
after N have left the window (count or age) — ``recovered: False`` and the latest
messages instead. Never a partial recovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HistoryPolicy:
    max_len: int = 100
    max_age: float = 24 * 3600.0
    recent: int = 50  # how many messages a join without ``since`` gets

    @property
    def max_age_ms(self) -> int:
        return int(self.max_age * 1000)


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    offset: int
    event: str
    payload: bytes  # JSON, with "offset" already inside
    ts_ms: int
    node: str = ""
    mac: str | None = None  # set when envelopes are signed


@dataclass(frozen=True)
class Recovery:
    position: Position
    recovered: bool
    messages: list[StoredMessage] = field(default_factory=list)


class HistoryUnavailable(Exception):
    """The broker could not store the message (e.g. Redis is down); nothing was sent."""


def with_offset(payload: bytes, offset: int) -> bytes:
    """``{"a":1}`` → ``{"a":1,"offset":N}``: the offset travels inside the payload."""
    if not payload.startswith(b"{") or not payload.endswith(b"}"):
        raise ValueError("history needs JSON object payloads")
    if payload.strip() == b"{}":
        return b'{"offset":%d}' % offset
    return payload[:-1] + b',"offset":%d}' % offset


def recover_from(
    since: Position | None,
    current: Position,
    window: list[StoredMessage],
    policy: HistoryPolicy,
    now_ms: int,
) -> Recovery:
    """Decide a recovery from the topic's current position and its stored window.

    ``window`` is every stored message still kept, oldest first.
    """
    fresh = [m for m in window if now_ms - m.ts_ms <= policy.max_age_ms]
    latest = Recovery(current, False, fresh[-policy.recent :] if policy.recent else [])
    if since is None or since.epoch != current.epoch or since.offset > current.offset:
        return latest
    if since.offset == current.offset:
        return Recovery(current, True, [])
    missed = [m for m in fresh if m.offset > since.offset]
    # All of them, one by one up to the current offset, or nothing: never partial.
    if [m.offset for m in missed] != list(range(since.offset + 1, current.offset + 1)):
        return latest
    return Recovery(current, True, missed)
