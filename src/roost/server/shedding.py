"""Past its capacity a node refuses new connections at once, cheaply, with a time to come back.

A reconnect storm is work that arrives faster than the node takes it. Admitted and queued,
it times out in the queues (the head timeout, the clients' own) and collapses the node;
refused at once, the clients come back spread out and the node serves at its capacity.
The node is past its capacity when

- its event loop lags (a timer due every ``interval`` fires late by more than ``max_lag``
  seconds: the loop has more ready work than it gets through), or
- more WebSocket upgrades are in flight (admitted to the handshake, not yet answered:
  waiting for a connect hook, a token check) than ``max_handshakes``.

Then a new WebSocket connection is answered ``503`` with a jittered ``Retry-After``
(1 … ``retry_after`` seconds, uniformly: the refused clients do not return together) from
its first bytes, before its head is parsed. Connections already admitted are served.
Timing logic is on an injectable clock; the jitter on an injectable random source.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable


class Shedder:
    __slots__ = (
        "_task",
        "clock",
        "handshakes",
        "interval",
        "lag",
        "max_handshakes",
        "max_lag",
        "random",
        "retry_after_max",
        "shed",
    )

    def __init__(
        self,
        *,
        max_handshakes: int,
        max_lag: float,
        retry_after: float = 5.0,
        interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.max_handshakes = max_handshakes
        self.max_lag = max_lag
        self.retry_after_max = max(1.0, retry_after)
        self.interval = interval
        self.clock = clock
        self.random = rand
        self.handshakes = 0  # upgrades admitted to the handshake and not answered yet
        self.lag = 0.0  # how late the last loop timer fired, seconds
        self.shed = 0  # connections refused here (a counter for /metrics)
        self._task: asyncio.Task[None] | None = None

    def why(self) -> str | None:
        """Why a new connection must be refused now (None: it may come in)."""
        if self.max_lag > 0 and self.lag > self.max_lag:
            return "event loop lag"
        if self.max_handshakes > 0 and self.handshakes >= self.max_handshakes:
            return "handshakes in flight"
        return None

    def retry_after(self) -> str:
        """Whole seconds in 1 … retry_after_max, uniformly (RFC 9110 allows only integers)."""
        return str(max(1, math.ceil(self.random() * self.retry_after_max)))

    def observe(self, expected: float, fired: float) -> None:
        """A timer due at ``expected`` fired at ``fired``: the loop's lag now."""
        self.lag = max(0.0, fired - expected)

    async def watch(self) -> None:
        while True:
            due = self.clock() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(due, self.clock())

    def start(self) -> None:
        if self._task is None and self.max_lag > 0:
            self._task = asyncio.get_running_loop().create_task(self.watch(), name="roost-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["Shedder"]
