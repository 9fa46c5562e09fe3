"""What a node tells the dashboard about itself, every ``interval`` seconds.

``Reporter.snapshot()`` reads the endpoint's state (sockets, PubSub's topics, presence,
counters, the broker's health) and turns counters into rates per second since the last
snapshot; ``run`` broadcasts one on ``admin:cluster`` every ``interval`` through the
PubSub, so every node's dashboard hears it (with the Redis broker in topic mode only
the nodes with a dashboard joined are subscribed). Cost: one pass over the node's
topics and tracked presences, one small broadcast, per interval; nothing when no
secret is set (no reporter exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from typing import Any

from ..channels import Endpoint
from .channel import SNAPSHOT, TOPIC

log = logging.getLogger("roost.admin")

#: Topics listed per node (by local members), the busiest first.
TOP = 20
#: Internal topics (long-poll relays, the dashboard itself) are not listed.
HIDDEN = ("phx:", "admin:")
#: The broker health fields a snapshot carries (numbers and flags; all there are).
BROKER_FIELDS = (
    "connected",
    "subscribed",
    "responsive",
    "published",
    "received",
    "publish_errors",
    "publish_timeouts",
    "dropped",
    "reconnects",
    "gaps",
    "missed",
    "unfillable",
)


class Reporter:
    """Snapshots of one node, and the task that broadcasts them.

    ``clock`` (monotonic seconds) times the rates and the uptime; ``wall`` (epoch
    seconds) stamps each snapshot for the page. Both injectable: tests move them.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        interval: float = 2.0,
        workers: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self.workers = workers
        self.clock = clock
        self.wall = wall
        self.started = clock()
        self.last: dict[str, Any] | None = None
        self._counters: dict[str, float] = {}
        self._at = self.started
        self._task: asyncio.Task[None] | None = None

    def counters(self) -> dict[str, float]:
        """The node's running totals whose rates the dashboard shows."""
        endpoint = self.endpoint
        stats = endpoint.stats
        totals: dict[str, float] = {
            "pushes_in": stats.pushes,
            "delivered": endpoint.pubsub.delivered,
            "joins": stats.joins,
            "connects": stats.connections_total,
        }
        health = endpoint.pubsub.broker.health() or {}
        for name in ("published", "received"):
            value = health.get(name)
            if isinstance(value, int | float):
                totals[f"broker_{name}"] = value
        return totals

    def snapshot(self) -> dict[str, Any]:
        """This node now; the rates are per second since the previous snapshot."""
        endpoint = self.endpoint
        pubsub = endpoint.pubsub
        now = self.clock()
        totals = self.counters()
        elapsed = now - self._at
        rates = {
            name: round((value - self._counters[name]) / elapsed, 2)
            if elapsed > 0 and name in self._counters
            else 0.0
            for name, value in totals.items()
        }
        self._counters, self._at = totals, now
        members = {t: pubsub.subscribers(t) for t in pubsub.topics() if not t.startswith(HIDDEN)}
        busiest = heapq.nlargest(TOP, members.items(), key=lambda item: (item[1], item[0]))
        listed = {topic for topic, _ in busiest}
        presence = endpoint.presence.counts(listed) if endpoint.presence is not None else {}
        broker = pubsub.broker
        health = broker.health() or {}
        snap: dict[str, Any] = {
            "node": endpoint.node,
            "at": int(self.wall() * 1000),
            "uptime": round(now - self.started, 1),
            "connections": len(endpoint.sockets),
            "channels": sum(members.values()),
            "topics": len(members),
            "watchers": pubsub.subscribers(TOPIC),
            "draining": endpoint.draining,
            "rates": rates,
            "broker": {
                "kind": type(broker).__name__,
                "connected": broker.connected,
                **{k: health[k] for k in BROKER_FIELDS if k in health},
            },
            "top": [
                {"topic": topic, "members": n, "presence": presence.get(topic, 0)}
                for topic, n in busiest
            ],
        }
        if self.workers:
            snap["workers"] = self.workers
        self.last = snap
        return snap

    async def tick(self) -> None:
        """One snapshot, broadcast to every dashboard on every node."""
        await self.endpoint.pubsub.broadcast(TOPIC, SNAPSHOT, self.snapshot())

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the next one may pass; the dashboard shows the silence
                log.exception("admin snapshot failed")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        self.started = self._at = self.clock()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="roost-admin")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
