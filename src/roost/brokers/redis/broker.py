"""The Redis broker: broadcasts between nodes over Redis Pub/Sub, composed of parts.

- ``connection``: the command pool (blocking, with deadlines) and Redis's health;
- ``publisher``: every publish of this node, in order, pipelined;
- ``subscriber``: the subscriber connection, resubscribed after any loss;
- ``cursor``: per-topic cursors that deliver stored broadcasts exactly once, in
  order, and catch a topic up from the history stream after every (re)subscribe;
- ``nodes``: this node's claim on its name.

Two routing modes: ``global`` (one channel, every node gets everything, as
phoenix_pubsub_redis) and ``topic`` (one channel per topic; a node subscribes while
it has local subscribers). docs/DESIGN.md ("Delivery model") says what holds under
which fault.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...protocol import Encoded
from ...pubsub import Broker, Counter, Deliver, Envelope, Lost, Timing
from ...pubsub.history import (
    HistoryPolicy,
    HistoryUnavailable,
    Page,
    Position,
    Recovery,
    with_offset,
)
from . import codec
from .cluster import ClusterConnection, ClusterRefused, is_cluster
from .cluster_publisher import ClusterPublisher
from .connection import REDIS_ERRORS, RedisConnection, safe_url
from .cursor import Cursors
from .keys import Keys
from .nodes import DuplicateNodeError, NodeName, registered
from .presence import RedisPresenceStore
from .publisher import Publisher
from .reader import HistoryReader
from .shards import ShardedSubscriber
from .stats import BrokerStats
from .subscriber import SubscriberLink

log = logging.getLogger("roost.redis")

MODES = ("global", "topic")
MAX_BATCH = 256  # envelopes held for one delivery, at most (bounds the first one's wait)
SEQ_LIMIT = 10_000  # publishing-only channels remembered before the unsubscribed are forgotten

__all__ = ["BrokerStats", "ClusterRefused", "DuplicateNodeError", "RedisBroker"]


class RedisBroker(Broker):
    delivers_stored = True  # stored broadcasts come back through the subscriber, in order

    def __init__(
        self,
        url: str,
        *,
        mode: str = "topic",
        keys: Keys | None = None,
        node_ttl: float = 15.0,
        probe_interval: float = 1.0,
        probe_timeout: float | None = None,
        subscribe_timeout: float = 5.0,
        timeout: float = 3.0,
        health_interval: float = 1.0,
        max_queue: int = 100_000,
        pool_size: int = 32,
        signing_key: bytes | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 0.2,
        instance: str | None = None,
        takeover: str | None = None,
        **connection_kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"pubsub mode must be one of {MODES}, not {mode!r}")
        self.url = url
        self.mode = mode
        self.keys = keys or Keys()
        self.node_ttl = node_ttl
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout or 3 * probe_interval
        self.subscribe_timeout = subscribe_timeout
        self.health_interval = health_interval
        self.stats = BrokerStats()
        self.signing_key = signing_key
        self.node = ""
        #: This process's claim on the node name; ``takeover``: the claim of a dead
        #: predecessor of the same name (a restarted worker) that may be replaced.
        self.instance = instance or os.urandom(8).hex()
        self.takeover = takeover
        self.connection_kwargs = dict(connection_kwargs)  # TLS files etc., for other clients
        self.timeout, self.pool_size, self.max_queue = timeout, pool_size, max_queue
        self.connection = RedisConnection(
            url, timeout=timeout, pool_size=pool_size, **connection_kwargs
        )
        # A client's stored publish answers inside its push deadline (the socket sets it,
        # pubsub/deadline.py); 2 x timeout bounds the others (server-side broadcasts).
        self.publisher = Publisher(
            self.connection,
            self.stats,
            deadline=2 * timeout,
            max_queue=max_queue,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )
        self.link: SubscriberLink | ShardedSubscriber = SubscriberLink(
            self.connection,
            self.stats,
            on_message=self._on_message,
            on_confirmed=self._on_confirmed,
            on_lost=self._on_lost,
        )
        self.publisher.reachable = lambda: self.stats.responsive
        self.publisher.unanswered = lambda: self._responsive(False)
        self._read_with(self.connection)
        self.cluster = False  # a Redis Cluster (found at start): see cluster.py
        self._stores: list[RedisPresenceStore] = []
        self._deliver: Deliver | None = None
        self._lost: Lost | None = None
        # Envelopes decoded in this turn of the event loop (everything one read from
        # Redis held), handed to PubSub together when the turn ends: see _emit.
        self._batch: list[Envelope] = []
        # Per channel, this node's last sequence number (receivers count jumps). A
        # forgotten channel starts again at 1, which receivers do not count as a gap.
        self._seq: dict[str, int] = {}
        self._seq_limit = SEQ_LIMIT
        self._last_seen: dict[tuple[str, str], int] = {}
        #: Metrics hook: origin-to-here delivery lag, seconds.
        self.observe_lag: Callable[[float], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._name: NodeName | None = None

    # -- what the server and the application ask of a Broker (pubsub/broker.py) --------
    @property
    def connected(self) -> bool:
        return self.stats.connected

    def health(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def counters(self) -> Iterable[Counter]:
        return self.stats.counters()

    def observe(self, publish: Timing | None, lag: Timing | None) -> None:
        self.publisher.observe = publish
        self.observe_lag = lag

    async def nodes(self) -> list[str]:
        """The node registry: every name with a key (``nodes.py``; raises when Redis
        does not answer)."""
        return await registered(self.connection.redis, self.keys)

    def presence_store(self, ttl: float) -> RedisPresenceStore:
        """Presence in Redis, shared by every node under this broker's keys; its entries
        signed with this broker's key, its dropped entries counted in its stats."""
        store = RedisPresenceStore(
            self.url,
            self.keys,
            ttl=ttl,
            signing_key=self.signing_key,
            stats=self.stats,
            **self.connection_kwargs,
        )
        self._stores.append(store)  # told at start if Redis is a cluster
        return store

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, node: str, deliver: Deliver, lost: Lost | None = None) -> None:
        self.node = node
        self._deliver = deliver
        self._lost = lost
        await self.connection.wait_until_up()
        if await is_cluster(self.connection):
            await self._use_cluster()
        elif self.mode == "global":
            self.link.wanted.add(self.keys.global_channel)
        if not self.cluster:  # each shard link probes itself on its own master
            probe = self.keys.probe_channel(node)
            self.link.wanted.add(probe)
            self.link.ignore = probe.encode()
        self.stats.responsive = True
        self._name = NodeName(
            self.connection.redis, self.keys, node, self.instance, self.node_ttl, self.takeover
        )
        await self._name.claim()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.link.run(), name="roost-redis-subscriber"),
            loop.create_task(self.publisher.run(), name="roost-redis-publisher"),
            loop.create_task(self._name.keep(), name="roost-redis-node"),
            loop.create_task(
                self.link.probe(
                    self.keys.probe_channel(node), self.probe_interval, self.probe_timeout
                ),
                name="roost-redis-probe",
            ),
            loop.create_task(
                self.connection.watch(self.health_interval, self._responsive),
                name="roost-redis-health",
            ),
        ]
        try:
            await asyncio.wait_for(self.link.up.wait(), self.subscribe_timeout * 2)
        except TimeoutError:
            log.warning("redis subscription not confirmed yet; continuing, it will retry")
        log.info(
            "redis broker up url=%s mode=%s channel=%s",
            safe_url(self.url),
            self.mode,
            self.keys.base,
        )

    def _read_with(self, connection: RedisConnection) -> None:
        self.reader = HistoryReader(connection, self.keys, self.stats, self.signing_key)
        self.cursors = Cursors(
            self.reader.catch_up, self._emit, self.stats, self.reader.trusted, self._lost_topic
        )

    async def _use_cluster(self) -> None:
        """Redis is a cluster node: the cluster's client, publisher and sharded links."""
        if self.mode == "global":
            raise ClusterRefused(
                "--pubsub-mode global cannot run on a Redis Cluster: its one channel would "
                "live on one master (sharded Pub/Sub) or be copied to every cluster node "
                "(plain Pub/Sub); use --pubsub-mode topic"
            )
        await self.connection.close()
        connection = ClusterConnection(
            self.url,
            timeout=self.timeout,
            pool_size=self.pool_size,
            clock=self.connection.clock,
            **self.connection_kwargs,
        )
        await connection.wait_until_up()
        self.connection, self.cluster = connection, True
        self.publisher = ClusterPublisher(
            connection,
            self.stats,
            deadline=2 * self.timeout,
            max_queue=self.max_queue,
            wait_replicas=self.publisher.wait_replicas,
            wait_timeout=self.publisher.wait_ms / 1000,
        )
        self.link = ShardedSubscriber(
            connection,
            self.stats,
            on_message=self._on_message,
            on_confirmed=self._on_confirmed,
            on_lost=self._on_lost_channels,
            probe_prefix=self.keys.probe_channel(self.node),
        )
        self._read_with(connection)
        for store in self._stores:
            await store.use_cluster(connection.cluster)
        log.info("redis is a cluster: %d masters, sharded Pub/Sub", len(connection.masters()))

    async def stop(self) -> None:
        await self.publisher.flush(timeout=2.0)
        await self.cursors.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            done, stuck = await asyncio.wait(self._tasks, timeout=self.timeout)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: its end is this stop's business
            for task in stuck:  # a cancel lost inside the client library: never wait forever
                log.warning("redis broker task %s outlived its cancel", task.get_name())
        if self._name is not None:
            await self._name.release()
        await self.link.restart()
        await self.connection.close()

    # -- publishing --------------------------------------------------------------------
    def channel_for(self, topic: str) -> str:
        return self.keys.global_channel if self.mode == "global" else self.keys.topic_channel(topic)

    def _next_seq(self, channel: str) -> int:
        seqs = self._seq
        seq = seqs.get(channel, 0) + 1
        seqs[channel] = seq
        if len(seqs) > self._seq_limit:  # bounded: forget channels this node is not on
            wanted = self.link.wanted
            self._seq = {c: s for c, s in seqs.items() if c in wanted or c == channel}
            self._seq_limit = max(self._seq_limit, 2 * len(self._seq))
        return seq

    async def publish(self, envelope: Envelope) -> None:
        """Queue the envelope on the ordered publisher; never blocks, never raises."""
        channel = self.channel_for(envelope.topic)
        ts = int(time.time() * 1000)
        mac = self._sign(envelope, envelope.payload.data, ts)
        data = codec.encode(envelope, self._next_seq(channel), ts, mac)
        self.publisher.plain(channel, data)

    async def publish_stored(
        self, envelope: Envelope, policy: HistoryPolicy, key: str | None = None
    ) -> Envelope:
        """Store in the topic's stream and publish, in one script; wait for its offset
        (``key``: idempotent within the kept history, see history.PUBLISH_STORED)."""
        payload = envelope.payload
        if payload.binary:
            raise ValueError("history stores JSON object payloads, not binary")
        topic = envelope.topic
        channel = self.channel_for(topic)
        seq = self._next_seq(channel)
        ts = int(time.time() * 1000)
        keys = [
            self.keys.history_meta(topic),
            self.keys.history_stream(topic),
            self.keys.history_keys(topic),
        ]
        args: list[Any] = [
            os.urandom(6).hex(),
            channel,
            self.node,
            seq,
            topic,
            envelope.event,
            payload.data,
            envelope.exclude or "",
            ts,
            policy.max_len,
            policy.max_age_ms,
            self._sign(envelope, payload.data, ts) or "",
            policy.max_bytes,
            key or "",
        ]
        offset, epoch, duplicate = await self.publisher.stored(keys, args)
        return Envelope(
            envelope.node,
            seq,
            topic,
            envelope.event,
            Encoded(with_offset(payload.data, offset)),
            envelope.exclude,
            offset,
            epoch,
            duplicate,
        )

    def _sign(self, env: Envelope, payload: bytes, ts_ms: int) -> str | None:
        if self.signing_key is None:
            return None
        return codec.sign(self.signing_key, env.node, env.topic, env.event, payload, ts_ms)

    # -- history -----------------------------------------------------------------------
    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        return await self.reader.history(topic, since, policy)

    async def page(
        self, topic: str, before: int, limit: int, epoch: str, policy: HistoryPolicy
    ) -> Page:
        return await self.reader.page(topic, before, limit, epoch, policy)

    # -- subscribing -------------------------------------------------------------------
    async def subscribe(self, topic: str) -> Position | None:
        """Subscribe and read the topic's position; from then on every stored broadcast
        after it is delivered, in order. Raises HistoryUnavailable if Redis does not
        confirm the subscription or answer inside the deadlines (nothing is left behind).
        """
        cursor = self.cursors.open(topic)
        if self.mode == "topic":
            await self.link.want(self.keys.topic_channel(topic))
        elif self.stats.subscribed:
            self.cursors.confirmed(cursor)
        assert cursor.confirmed is not None
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                await asyncio.shield(cursor.confirmed)
            epoch, top, _, _ = await self.reader.catch_up(topic, None, 0, 0)
        except BaseException as exc:
            if self.cursors.topics.get(topic) is cursor:
                await self.unsubscribe(topic)
            if isinstance(exc, REDIS_ERRORS):
                log.warning("subscribe %s failed: %r", topic, exc)
                raise HistoryUnavailable(f"subscription not confirmed: {exc!r}") from exc
            raise
        if self.cursors.topics.get(topic) is not cursor:
            raise HistoryUnavailable("unsubscribed while subscribing")
        self.cursors.positioned(cursor, epoch, top)
        return Position(top, epoch or "")

    async def unsubscribe(self, topic: str) -> None:
        self.cursors.forget(topic)
        if self.mode == "global":
            return
        channel = self.keys.topic_channel(topic)
        await self.link.unwant(channel)
        self._seq.pop(channel, None)  # receivers see the sequence start again: no gap
        for key in [k for k in self._last_seen if k[1] == channel]:
            del self._last_seen[key]

    def _on_confirmed(self, channel: str) -> None:
        if self.mode == "global":
            if channel == self.keys.global_channel:
                for cursor in list(self.cursors.topics.values()):
                    self.cursors.confirmed(cursor)
            return
        topic = self.keys.topic_of(channel)
        found = self.cursors.topics.get(topic) if topic is not None else None
        if found is not None:
            self.cursors.confirmed(found)

    def _on_lost(self) -> None:
        self.cursors.lost()

    def _on_lost_channels(self, channels: Iterable[str]) -> None:
        topics = (self.keys.topic_of(c) for c in channels)
        self.cursors.lost([t for t in topics if t is not None])

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            wire = codec.decode(data)
        except codec.EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning("dropped a message on %s that is not a roost envelope: %s", channel, exc)
            return
        env = wire.envelope
        if self.signing_key is not None and not codec.verify(self.signing_key, wire):
            self.stats.rejected += 1
            log.warning("dropped an envelope on %s that failed its signature check", channel)
            return
        if env.node != self.node:
            self.stats.received += 1
            self._count_gap(env, channel)
            if self.observe_lag is not None:
                self.observe_lag(max(0.0, time.time() - wire.ts_ms / 1000))
        elif env.offset is None:
            return  # our own plain echo: delivered locally already
        self.cursors.message(env)

    def _count_gap(self, env: Envelope, channel: bytes) -> None:
        """Per origin and channel, sequence numbers come one by one; count any jump."""
        key = (env.node, channel.decode())
        if key[1] not in self.link.wanted:
            return  # in flight after an UNSUBSCRIBE: not tracked (nothing to keep)
        last = self._last_seen.get(key)
        if last is not None and env.seq > last + 1:
            missed = env.seq - last - 1
            self.stats.gaps += 1
            self.stats.missed += missed
            log.warning(
                "gap from node=%s channel=%s: %d message(s) missed", env.node, key[1], missed
            )
        self._last_seen[key] = env.seq

    def _emit(self, env: Envelope) -> None:
        """Queue for delivery at the end of this loop turn (at most MAX_BATCH held).

        ``read_response`` returns without suspending while replies are buffered, so
        every message one read from Redis brought is decoded before the loop moves on;
        delivering them together lets PubSub write each subscriber's share in one go.
        """
        batch = self._batch
        batch.append(env)
        if len(batch) == 1:
            asyncio.get_running_loop().call_soon(self._deliver_batch)
        elif len(batch) >= MAX_BATCH:
            self._deliver_batch()

    def _lost_topic(self, topic: str) -> None:
        """What was emitted before the hole goes first; then the topic's members end."""
        self._deliver_batch()
        if self._lost is not None:
            self._lost(topic)

    def _deliver_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch and self._deliver is not None:
            self._deliver(batch)

    def _responsive(self, ok: bool) -> None:
        if ok != self.stats.responsive:
            log.warning("redis %s", "answers again" if ok else "does not answer in time")
        self.stats.responsive = ok
