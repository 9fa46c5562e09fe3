"""When to try again: jittered exponential backoff, and the server's ``Retry-After``.

phoenix.js retries on a fixed schedule (reconnect after 10, 50, 100 ... ms, rejoin after
1, 2, 5 s): every client of a node that dies tries again at the same instants, a
reconnect storm on whatever node takes them. Here attempt ``n`` (from 1) waits a delay
drawn uniformly from ``[floor, max(floor, min(cap, base * 2 ** (n - 1))])`` — "full
jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"), with a small floor so
that no attempt comes back at once. The ceiling doubles per attempt up to ``cap``; the
draw spreads a crowd evenly over the whole window.

A refusal that says when to come back (HTTP 503 or 429 with ``Retry-After``: roost past
``--max-connections``, the per-address caps and the connection rate) waits that long
*plus* the jittered delay, so clients refused together do not all return at the same
second either.

Everything here is pure: the random source and the clock are arguments, so schedules are
unit-tested without sleeping.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: the longest Retry-After honoured (a bigger one, or a date further away, counts as this)
RETRY_AFTER_MAX = 300.0
#: statuses whose Retry-After the client honours
RETRY_STATUSES = frozenset({429, 503})

Random = Callable[[], float]  # uniform in [0, 1), like random.random


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff, in seconds: ``delay(n)`` for attempt ``n >= 1``."""

    base: float
    cap: float = 30.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.cap or self.base <= 0:
            raise ValueError(f"bad backoff: {self}")

    def ceiling(self, attempt: int) -> float:
        """The top of attempt ``attempt``'s window: ``min(cap, base * 2 ** (attempt - 1))``."""
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base is past any cap
        return max(self.floor, min(self.cap, self.base * 2.0**exponent))

    def delay(self, attempt: int, random: Random = _random.random) -> float:
        """A delay drawn uniformly from ``[floor, ceiling(attempt)]``."""
        return self.floor + random() * (self.ceiling(attempt) - self.floor)


#: socket reconnect: first retry within 50 ms .. 1 s (mean ~0.5 s), then 2, 4, 8, 16, 30 s windows
RECONNECT = Backoff(base=1.0, cap=30.0, floor=0.05)
#: channel rejoin while connected (refused, timed out, phx_error): 0.25 .. 2 s, then 4, 8, 16, 30 s
REJOIN = Backoff(base=2.0, cap=30.0, floor=0.25)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (a Unix time), at most RETRY_AFTER_MAX.

    Either delta-seconds (``"5"``) or an HTTP-date; None when absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def next_delay(
    backoff: Backoff, attempt: int, retry_after: float | None, random: Random = _random.random
) -> float:
    """The wait before attempt ``attempt``: the jittered delay, after ``retry_after`` if any."""
    return (retry_after or 0.0) + backoff.delay(attempt, random)
