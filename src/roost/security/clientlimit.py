"""A token bucket per client (``clientip.client_key``), in a table that stays bounded.

A bucket left alone refills; once full it is the same as a new one, so it is dropped
(the table keeps buckets in least-recently-used order and drops full ones from the
old end on every take: amortised O(1), no timer). An attacker with many addresses
can still fill the table faster than buckets refill; past ``max_clients`` the least
recently used bucket goes (that client gets a fresh burst: the cost is a burst per
evicted client, never unbounded memory).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from .ratelimit import TokenBucket


class ClientBuckets:
    __slots__ = ("buckets", "burst", "max_clients", "rate")

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """Spend one of ``client``'s tokens: 0 if it had one, else the seconds until it will."""
        if self.rate <= 0:
            return 0.0
        self._expire(now)
        bucket = self.buckets.get(client)
        if bucket is None:
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst, now)
            while len(self.buckets) > self.max_clients:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(client)
        if bucket.take(now):
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _expire(self, now: float) -> None:
        while self.buckets:
            bucket = next(iter(self.buckets.values()))
            if bucket.tokens + (now - bucket.stamp) * self.rate < self.burst:
                return
            self.buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self.buckets)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
