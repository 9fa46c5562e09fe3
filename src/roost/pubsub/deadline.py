"""The push deadline: one time by which a client's message must be answered.

Every message a socket reads gets a deadline — its arrival on the node plus
``Limits.push_deadline`` — and keeps it for everything its handling waits for: the
socket's own queue behind earlier messages, the Redis pool, the command, a reconnect.
The socket sets it in a context variable before it hands the message to the channel;
whatever the handler awaits (``broadcast`` → the broker's stored publish) reads it
with ``remaining()`` and gives up in time. A context variable rather than a parameter:
applications' ``handle_in`` calls ``self.broadcast(...)`` and need not pass anything
along, and tasks a handler spawns inherit it.

Past the deadline the client gets an error reply at once — never a late ``ok``:

- ``temporarily unavailable``: the message was certainly not stored or sent (it
  expired in a queue, or the broker is known to be unreachable);
- ``timeout``: it was handed to Redis and no answer came in time — it may have been
  stored. A client that retries with the same idempotency key gets the first copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The absolute deadline (on the endpoint's monotonic clock) of the message being
#: handled in this context; None outside a client's message (server-side broadcasts).
_DEADLINE: ContextVar[float | None] = ContextVar("roost_push_deadline", default=None)


def current() -> float | None:
    return _DEADLINE.get()


def remaining(clock: Callable[[], float]) -> float | None:
    """Seconds left before the current message's deadline (None: no deadline here)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - clock()


@contextmanager
def within(deadline: float | None) -> Iterator[None]:
    """Handle one message under ``deadline`` (None: none)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


__all__ = ["current", "remaining", "within"]
