"""A worker far above its share of the group's sockets hands some back, slowly.

With ``--workers N`` the kernel spreads only *new* connections over the workers. When a
worker dies its clients reconnect to the survivors, and after its restart the survivors
keep them: the split stays lopsided (9,825 / 9,799 became 340 / 19,284), and the next
crash of the crowded worker is a reconnect storm twice the size. So every worker runs a
``Rebalancer``: every ``interval`` seconds it reads the group's open-socket counts (each
sibling's ``/load`` on its private socket, see siblings.py) and, when its own count is
too far above the group's mean, closes some of its WebSocket connections with 1012
(as a drain does). Their clients reconnect to the port (the kernel puts each on any
worker: on this one again with probability 1/N) and rejoin with ``since``, losing nothing.

Rules (``Rebalancer.plan``, pure: an injectable random source, no I/O):

- Idle unless every worker answers and is ready (none starting, draining or without
  Redis) and this one is ready too.
- ``excess = own - mean`` over the group. Rebalancing starts when the excess is above
  ``tolerance * mean`` and above ``floor`` sockets (tiny groups do not churn), and goes on
  until the excess is at most half of that (``tolerance/2 * mean``, or ``floor``):
  hysteresis, so a worker near the line does not flap.
- While rebalancing, each interval closes at most ``rate_per_second * interval`` sockets
  (``rate_per_second`` is 1 % of its sockets per second, at least ``min_rate``, at most
  ``max_rate``), and never more than the excess over the stop line: even if none of
  them came back it would not fall below its share.
- The closes of one interval are chosen at random among its WebSocket connections
  (long-poll sessions are left alone) and spread at random instants over the interval
  (``spread``), never a burst.

``Balancer`` is the thin asyncio shell: read, plan, close on schedule, repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..channels import Endpoint, Socket
    from .siblings import Siblings

log = logging.getLogger("roost.workers")

REASON = "rebalance"


@dataclass(frozen=True)
class BalancePolicy:
    tolerance: float = 0.2  # above the mean by more than this share: hand sockets back
    max_rate: float = 200.0  # closes per second at most
    fraction: float = 0.01  # ... and at most this share of its own sockets per second
    min_rate: float = 20.0  # ... but at least this many (a small worker still balances)
    floor: int = 10  # an excess of at most this many sockets is never acted on
    interval: float = 2.0  # seconds between readings of the group's counts


@dataclass(frozen=True)
class Load:
    """What a worker says of itself on its private socket's ``/load``."""

    connections: int
    ready: bool


class Rebalancer:
    """The rules (see the module doc): how many sockets to close in the next interval."""

    def __init__(self, policy: BalancePolicy, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.random = rand
        self.active = False  # rebalancing (between the start and the stop line)
        self.mean = 0.0  # the group's mean at the last reading
        self.excess = 0.0  # own - mean at the last reading

    def rate(self, own: int) -> float:
        """Closes per second allowed to a worker with ``own`` sockets."""
        p = self.policy
        return min(p.max_rate, max(p.min_rate, p.fraction * own))

    def plan(self, own: Load, others: Sequence[Load | None]) -> int:
        """Sockets to close over the next interval, given every sibling's reading
        (None: it did not answer)."""
        p = self.policy
        if not own.ready or not others or any(o is None or not o.ready for o in others):
            self.active = False
            return 0
        counts = [own.connections] + [o.connections for o in others if o is not None]
        self.mean = mean = sum(counts) / len(counts)
        self.excess = excess = own.connections - mean
        start = max(p.tolerance * mean, p.floor)
        stop = max(p.tolerance * mean / 2, p.floor)
        room = math.floor(excess - stop)  # whole sockets above the stop line
        if excess > start:
            self.active = True
        elif room < 1:
            self.active = False
        if not self.active:
            return 0
        budget = self.rate(own.connections) * p.interval
        whole = math.floor(budget)
        if self.random() < budget - whole:  # the fraction, on average
            whole += 1
        return min(whole, room)

    def spread(self, count: int) -> list[float]:
        """Instants (seconds from now, ascending) for ``count`` closes over an interval."""
        return sorted(self.random() * self.policy.interval for _ in range(count))


class Balancer:
    """The asyncio shell: every interval, read the group, plan, close on schedule.

    ``read()`` returns every sibling's Load (None for a silent one); ``own()`` this
    worker's; ``victims(n)`` up to ``n`` of its sockets, chosen at random; ``close(s)``
    closes one. ``sleep`` is injectable (tests run it on a fake clock).
    """

    def __init__(
        self,
        rules: Rebalancer,
        read: Callable[[], Awaitable[Sequence[Load | None]]],
        own: Callable[[], Load],
        victims: Callable[[int], list[Socket]],
        close: Callable[[Socket], bool],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rules = rules
        self.read = read
        self.own = own
        self.victims = victims
        self.close = close
        self.sleep = sleep
        self.closed = 0  # sockets closed to rebalance, in all
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> int:
        """One interval: read, plan, close; the number closed."""
        interval = self.rules.policy.interval
        others = await self.read()
        was_active = self.rules.active
        count = self.rules.plan(self.own(), others)
        if self.rules.active != was_active:
            log.info(
                "rebalance %s: %d sockets here, the group's mean %.0f",
                "started" if self.rules.active else "done",
                self.own().connections,
                self.rules.mean,
            )
        if not count:
            await self.sleep(interval)
            return 0
        closed = 0
        now = 0.0
        for at, socket in zip(self.rules.spread(count), self.victims(count), strict=False):
            await self.sleep(at - now)
            now = at
            if not self.own().ready:  # draining (or Redis lost) meanwhile
                break
            if self.close(socket):
                closed += 1
        self.closed += closed
        await self.sleep(max(0.0, interval - now))
        return closed

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end balancing for the process's life
                log.exception("rebalance round failed")
                await self.sleep(self.rules.policy.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# -- wiring to an endpoint and its siblings ----------------------------------------------


def own_load(endpoint: Endpoint) -> Load:
    """This worker's Load: what ``/readyz`` says (broker connected, not draining)."""
    ready = endpoint.pubsub.broker.connected and not endpoint.draining
    return Load(len(endpoint.sockets), ready)


def parse_load(answer: tuple[int, bytes] | None) -> Load | None:
    if answer is None or answer[0] != 200:
        return None
    try:
        body = json.loads(answer[1])
        return Load(int(body["connections"]), bool(body["ready"]))
    except (ValueError, KeyError, TypeError):
        return None


def for_endpoint(
    endpoint: Endpoint,
    siblings: Siblings,
    policy: BalancePolicy,
    rand: random.Random | None = None,
) -> Balancer:
    """A Balancer over ``endpoint``'s sockets, reading the group through ``siblings``."""
    from .drain import close_restart
    from .siblings import ask
    from .wswire import WsWire

    rng = rand or random.Random()

    async def read() -> list[Load | None]:
        others = siblings.others()
        answers = await asyncio.gather(*(ask(siblings, k, "/load") for k in others))
        return [parse_load(a) for a in answers]

    def victims(count: int) -> list[Socket]:
        candidates = [s for s in endpoint.sockets if isinstance(s.wire, WsWire) and not s.closed]
        return rng.sample(candidates, min(count, len(candidates)))

    def close(socket: Socket) -> bool:
        if socket.closed or socket not in endpoint.sockets:
            return False
        close_restart(socket, REASON)
        endpoint.stats.rebalanced += 1
        return True

    return Balancer(
        Rebalancer(policy, rng.random), read, lambda: own_load(endpoint), victims, close
    )
