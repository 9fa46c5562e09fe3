"""History: what a broker keeps per topic, and what a rejoining client gets back.

Every stored broadcast gets the topic's next ``offset``; a topic's history also has
an ``epoch``, which changes whenever the history was lost (a new Redis, a memory
broker restarted). A client that saw offset N of epoch E asks for everything after
N: it gets all of it (``recovered``), or — when the epoch changed or the messages
after N have left the window (count or age) — ``recovered: False`` and the latest
messages instead. Never a partial recovery.

Reading creates nothing. A topic with no history answers with an *empty position*:
offset 0 and an epoch ``~<generation>.<ms>`` stamped with the store's generation (a
Redis's replication id, a memory hub's id) and the time of the read. The first
stored broadcast begins the real epoch ``<generation>.<ms>.<nonce>``, offsets from 1.
A client whose cursor is an empty position (offset 0, or advanced by the broadcasts
it then received) recovers from the topic's epoch if that epoch is the first one
begun after its read: same generation (no restart or eviction lost one) and begun
within ``max_age`` of the read (an earlier one would have had to expire first, which
takes ``max_age``). Anything else is ``recovered: False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HistoryPolicy:
    max_len: int = 100
    max_age: float = 24 * 3600.0
    recent: int = 50  # how many messages a join without ``since`` gets
    max_bytes: int = 1024 * 1024  # stored bytes per topic, oldest messages dropped first
    max_rooms: int = 1000  # topics with history per node (memory broker)

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


class HistoryTimeout(HistoryUnavailable):
    """The message was handed to Redis and no answer came before the push deadline: it
    may have been stored (the client is told ``timeout``; a retry with the same
    idempotency key gets the first copy, see deadline.py)."""


def refusal(exc: HistoryUnavailable) -> str:
    """The reason a client is given: ``timeout`` when the message may have been stored
    (retry with the same idempotency key), ``temporarily unavailable`` when it was not."""
    return "timeout" if isinstance(exc, HistoryTimeout) else "temporarily unavailable"


def with_offset(payload: bytes, offset: int) -> bytes:
    """``{"a":1}`` → ``{"a":1,"offset":N}``: the offset travels inside the payload."""
    if not payload.startswith(b"{") or not payload.endswith(b"}"):
        raise ValueError("history needs JSON object payloads")
    if payload.strip() == b"{}":
        return b'{"offset":%d}' % offset
    return payload[:-1] + b',"offset":%d}' % offset


def empty_epoch(generation: str, now_ms: int) -> str:
    """The epoch of an empty position: nothing stored at ``now_ms``."""
    return f"~{generation}.{now_ms}"


def new_epoch(generation: str, now_ms: int, nonce: str) -> str:
    """A history's epoch, begun at ``now_ms`` by its first stored broadcast."""
    return f"{generation}.{now_ms}.{nonce}"


def is_empty(epoch: str) -> bool:
    return epoch.startswith("~")


def _stamp(epoch: str) -> tuple[str, int] | None:
    parts = epoch.removeprefix("~").split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def first_after(empty: str, epoch: str, max_age_ms: int) -> bool:
    """``epoch`` is the first history (or empty position) of its topic after the
    empty position ``empty``: same generation, stamped within ``max_age_ms`` after."""
    a, b = _stamp(empty), _stamp(epoch)
    return a is not None and b is not None and a[0] == b[0] and 0 <= b[1] - a[1] < max_age_ms


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
    if since is not None and is_empty(since.epoch) and since.epoch != current.epoch:
        # A cursor begun on an empty topic: offsets 1.. of the next history are its own.
        if not first_after(since.epoch, current.epoch, policy.max_age_ms):
            return latest
        if is_empty(current.epoch):
            return Recovery(current, since.offset == 0, [])
        since = Position(since.offset, current.epoch)
    if since is None or since.epoch != current.epoch or since.offset > current.offset:
        return latest
    if since.offset == current.offset:
        return Recovery(current, True, [])
    missed = [m for m in fresh if m.offset > since.offset]
    # All of them, one by one up to the current offset, or nothing: never partial.
    if [m.offset for m in missed] != list(range(since.offset + 1, current.offset + 1)):
        return latest
    return Recovery(current, True, missed)


# -- paging: older messages, a page at a time --------------------------------------------

#: The most messages one page may ask for.
MAX_PAGE = 100


@dataclass(frozen=True)
class Page:
    """Stored messages before an offset, oldest first.

    ``epoch``: the topic's current epoch. ``beginning``: nothing older is kept (the
    history starts here, or the rest was trimmed). ``reset``: the client's epoch is not
    the topic's (the history it paged through is gone): no messages, page from the new
    epoch's latest instead.
    """

    messages: list[StoredMessage]
    epoch: str
    beginning: bool
    reset: bool = False


def same_epoch(client: str, current: str, max_age_ms: int) -> bool:
    """Offsets of ``client``'s epoch mean the same messages in ``current``: the same
    epoch, or a cursor begun on the empty topic whose first history ``current`` is."""
    if client == current:
        return True
    return is_empty(client) and first_after(client, current, max_age_ms)


def page_of(
    epoch: str,
    before: int,
    limit: int,
    current: Position,
    window: list[StoredMessage],
    policy: HistoryPolicy,
    now_ms: int,
) -> Page:
    """Up to ``limit`` messages before offset ``before``, from ``window`` (stored
    messages in offset order: all of them, or at least the ``limit + 1`` newest before
    ``before``), for a client that read the topic in ``epoch``."""
    if not same_epoch(epoch, current.epoch, policy.max_age_ms):
        if is_empty(epoch) and is_empty(current.epoch):
            return Page([], current.epoch, True)  # nothing was ever stored: the beginning
        return Page([], current.epoch, False, reset=True)
    older = [m for m in window if m.offset < before and now_ms - m.ts_ms <= policy.max_age_ms]
    return Page(older[-limit:], current.epoch, len(older) <= limit)
