"""Sharded Pub/Sub on a Redis Cluster: one SSUBSCRIBE connection per master.

Each topic channel (``roost:<app>:t:{<topic>}``) lives in its topic's slot; the master
serving that slot is the only one that can deliver it (SPUBLISH is not broadcast over
the cluster bus). So the node keeps one ``ShardLink`` per master that serves any of
its channels — the single-Redis ``SubscriberLink`` speaking SSUBSCRIBE, one command per
slot (SSUBSCRIBE takes channels of one slot only) — and moves channels between links
when the shard map changes:

- a slot migrated away: the old master pushes ``sunsubscribe`` for its channels;
- a MOVED reply to an SSUBSCRIBE: the client's map was stale;
- a master died: its link's connection fails, its topics are DETACHED at once
  (``on_lost``), and the map is read again every ``REHOME`` seconds until the
  replica that took over serves the slots.

Each time, the map is read again (CLUSTER SLOTS), every channel whose owner changed is
SUNSUBSCRIBEd from the old link and SSUBSCRIBEd on the new owner's; its confirmation
puts the topic's cursor into its catch-up (cursor.py), so what was stored meanwhile
is delivered, late, never dropped. Each link sends a liveness probe to itself on a
channel in one of its master's own slots (a precomputed hash tag per slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from .cluster import CLUSTER_ERRORS, ClusterConnection, slot_of, slot_tags
from .stats import BrokerStats
from .subscriber import SubscriberLink

log = logging.getLogger("roost.redis")

REHOME = 0.5  # seconds between shard map reads while a link is down
Address = tuple[str, int]
MOVED = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class ShardLink(SubscriberLink):
    """The subscriber connection to one master: SSUBSCRIBE, batched per slot."""

    SUBSCRIBE, UNSUBSCRIBE = "SSUBSCRIBE", "SUNSUBSCRIBE"
    MESSAGE, CONFIRM = b"smessage", b"ssubscribe"

    def __init__(self, owner: ShardedSubscriber, address: Address, probe: str) -> None:
        super().__init__(
            owner.connection,
            owner.stats,
            on_message=owner.on_message,
            on_confirmed=owner.on_confirmed,
            on_lost=lambda: owner.link_lost(self),
        )
        self.owner = owner
        self.cluster = owner.connection
        self.address = address
        self.probe_channel = probe
        self.wanted.add(probe)
        self.ignore = probe.encode()
        self.tasks: list[asyncio.Task[None]] = []

    def topics_channels(self) -> list[str]:
        return [c for c in self.wanted if c != self.probe_channel]

    def _connection(self) -> AbstractConnection:
        return self.cluster.node_subscriber(*self.address)

    async def _subscribe_all(self, conn: AbstractConnection, channels: list[str]) -> None:
        by_slot: dict[int, list[str]] = defaultdict(list)
        for channel in channels:
            by_slot[slot_of(channel)].append(channel)
        for group in by_slot.values():
            await conn.send_command(self.SUBSCRIBE, *group)

    async def _read(self, conn: AbstractConnection, pending: set[bytes]) -> None:
        try:
            await super()._read(conn, pending)
        except ResponseError as exc:  # MOVED: this master does not serve a slot any more
            if str(exc).startswith(MOVED):
                self.owner.kick()
            raise

    def _mark(self, up: bool) -> None:
        if up:
            self.up.set()
        else:
            self.up.clear()
        self.owner.links_changed()

    def _other(self, kind: bytes, reply: list[bytes]) -> None:
        # Our own SUNSUBSCRIBE's channel is no longer wanted; a wanted one is the
        # server's: its slot moved to another master.
        if kind == b"sunsubscribe" and (channel := reply[1].decode()) in self.wanted:
            log.info("redis cluster: %s dropped by %s:%d", channel, *self.address)
            self.owner.dropped(channel)

    async def _publish_probe(self, channel: str) -> None:
        await self.cluster.cluster.spublish(self.probe_channel, b"probe")


class ShardedSubscriber:
    """Every topic channel of the node, each on the link of the master serving it."""

    def __init__(
        self,
        connection: ClusterConnection,
        stats: BrokerStats,
        *,
        on_message: Callable[[bytes, bytes], None],
        on_confirmed: Callable[[str], None],
        on_lost: Callable[[Iterable[str]], None],
        probe_prefix: str,
    ) -> None:
        self.connection = connection
        self.stats = stats
        self.on_message = on_message
        self.on_confirmed = on_confirmed
        self.on_lost = on_lost
        self.probe_prefix = probe_prefix
        self.wanted: set[str] = set()  # every topic channel (the broker's view)
        self.home: dict[str, ShardLink] = {}
        self.links: dict[Address, ShardLink] = {}
        self.up = asyncio.Event()
        self.up.set()  # no links yet: nothing to wait for
        self.ignore: bytes | None = None
        self._kick = asyncio.Event()
        self._dropped: set[str] = set()
        self._running = False
        self._probe: tuple[float, float] | None = None

    # -- what the broker asks of a subscriber link ------------------------------------
    async def want(self, channel: str) -> None:
        self.wanted.add(channel)
        link = self._link(self.connection.owner(channel))
        self.home[channel] = link
        await link.want(channel)

    async def unwant(self, channel: str) -> None:
        self.wanted.discard(channel)
        link = self.home.pop(channel, None)
        if link is not None:
            await link.unwant(channel)

    async def restart(self) -> None:
        for link in list(self.links.values()):
            await link.restart()

    async def run(self) -> None:
        """Start the links; re-read the shard map when told to, or while one is down."""
        self._running = True
        for link in self.links.values():
            self._start(link)
        try:
            while True:
                wait = REHOME if not self.up.is_set() else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
                self._kick.clear()
                await self.rehome()
        finally:
            for link in list(self.links.values()):
                await self._drop(link)

    async def probe(self, channel: str, interval: float, timeout: float) -> None:
        """Each link probes itself (on one of its master's slots); this waits forever."""
        self._probe = (interval, timeout)
        for link in self.links.values():
            self._start_probe(link)
        await asyncio.Event().wait()

    # -- the links ---------------------------------------------------------------------
    def kick(self) -> None:
        self._kick.set()

    def dropped(self, channel: str) -> None:
        """The server ended a subscription (its slot moved): subscribe it again where
        the map says, even if that is the same master."""
        self._dropped.add(channel)
        self.kick()

    def link_lost(self, link: ShardLink) -> None:
        self.on_lost(link.topics_channels())
        self.kick()

    def links_changed(self) -> None:
        up = all(link.up.is_set() for link in self.links.values())
        self.stats.subscribed = up
        if up:
            self.up.set()
        else:
            self.up.clear()

    async def rehome(self) -> None:
        """Read the shard map; move every channel whose slot changed master."""
        try:
            await self.connection.refresh()
        except CLUSTER_ERRORS as exc:
            log.debug("redis cluster map not read: %r", exc)
            return
        dropped, self._dropped = self._dropped, set()
        for channel, link in list(self.home.items()):
            address = self._owner(channel)
            if address == link.address and channel in dropped:
                await link.want(channel)  # the same master: SSUBSCRIBE again
            elif address is None and channel in dropped:
                self._dropped.add(channel)  # not served right now: the next pass
            elif address is not None and address != link.address:
                log.info("redis cluster: %s now on %s:%d", channel, *address)
                await link.unwant(channel)
                new = self._link(address)
                self.home[channel] = new
                await new.want(channel)
        serving = set(self.home.values())
        for link in list(self.links.values()):
            if link not in serving:
                await self._drop(link)
            elif self._owner(link.probe_channel) not in (link.address, None):
                await link.unwant(link.probe_channel)
                link.probe_channel = self._probe_channel(link.address)
                link.ignore = link.probe_channel.encode()
                await link.want(link.probe_channel)
        self.links_changed()

    def _owner(self, channel: str) -> Address | None:
        try:
            return self.connection.owner(channel)
        except CLUSTER_ERRORS:
            return None  # the slot is not served right now: the next pass

    def _link(self, address: Address) -> ShardLink:
        link = self.links.get(address)
        if link is None:
            link = ShardLink(self, address, self._probe_channel(address))
            self.links[address] = link
            if self._running:
                self._start(link)
            self.links_changed()
        return link

    def _probe_channel(self, address: Address) -> str:
        """A channel in one of the master's own slots, for its link's liveness probe."""
        tags = slot_tags()
        cache = self.connection.cluster.nodes_manager.slots_cache
        slot = next(
            (s for s, nodes in cache.items() if (nodes[0].host, int(nodes[0].port)) == address),
            0,
        )
        return f"{self.probe_prefix}:{{{tags[slot]}}}"

    def _start(self, link: ShardLink) -> None:
        loop = asyncio.get_running_loop()
        name = f"roost-redis-shard-{link.address[0]}:{link.address[1]}"
        link.tasks.append(loop.create_task(link.run(), name=name))
        if self._probe is not None:
            self._start_probe(link)

    def _start_probe(self, link: ShardLink) -> None:
        assert self._probe is not None
        if len(link.tasks) < 2:
            interval, timeout = self._probe
            link.tasks.append(
                asyncio.get_running_loop().create_task(
                    link.probe(link.probe_channel, interval, timeout),
                    name=f"roost-redis-probe-{link.address[0]}:{link.address[1]}",
                )
            )

    async def _drop(self, link: ShardLink) -> None:
        self.links.pop(link.address, None)
        for task in link.tasks:
            task.cancel()
        for task in link.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        link.tasks.clear()
        await link.restart()
