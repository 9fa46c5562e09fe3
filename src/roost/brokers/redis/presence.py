"""Presence in Redis: per topic a hash (phx_ref → entry) and a zset (phx_ref → expiry).

    hash <prefix>:<app>:p:{topic}    phx_ref → {"k": key, "n": node, "m": meta[, "s": mac]}
    zset <prefix>:<app>:pz:{topic}   phx_ref → expiry (ms)
    zset <prefix>:<app>:presence     topic → its earliest expiry (ms): when a sweep is due

Expiries are Redis's time (``TIME``, read by the scripts that write and compare them),
never a node's: a node whose clock runs ahead or behind neither reaps the live entries
of others nor writes entries that die early or outlive it. The node's own clock only
measures how far off it is (``skew``, a warning when it passes a second).

Each node refreshes its own entries' expiry every ``ttl/3``. A node that dies
(kill -9, no goodbye) stops refreshing; every node sweeps expired entries every
``ttl/3`` with one script per topic that removes them and returns them, so exactly one
node gets each dead entry and broadcasts its leave.

Nothing can leak:

- Every script that writes a topic's entries (add, refresh, remove, sweep) also sets
  the topic's score in the registry to the earliest expiry left in it (or removes the
  topic and its keys when none is left), in the same atomic step. After a Redis restart
  the refresh that writes a node's entries back registers their topics again.
- A sweep takes every topic whose score has passed, in batches, with no cap: topics
  whose entries are all refreshed never come due, so a sweep costs what is dead, not
  the number of rooms.
- Both keys of a topic expire (PEXPIREAT) one ``ttl`` after its latest entry expiry:
  should the registry itself be lost (evicted), the keys still go.
- A node that finds its own live entries missing (Redis restarted, or it was frozen
  and swept) writes them back and announces the joins again; then, one ``ttl`` later,
  when every live node has written its own back, it asks Presence to push a fresh
  ``presence_state`` to its members of those topics: users of a node that died while
  Redis was empty (nobody will ever sweep them) leave their lists.

Entries are size-bounded, and signed with ``--redis-signing-key`` (presence_codec.py):
every entry read back (a joiner's state, a sweep, a removal, a fresh state) that fails
is dropped, never broadcast, and counted (``BrokerStats.presence_dropped``).

Every command has a deadline (``command_timeout``, no retry): a frozen or unreachable
Redis is an error, never a hang.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...pubsub.presence import Changed, Entry, Resync
from .keys import Keys
from .presence_cluster import ClusterPresence
from .presence_codec import MAX_ENTRY_BYTES, EntryCodec
from .presence_scripts import ADD, COUNT, LIST, REFRESH, REMOVE, SWEEP
from .sentinel import blocking_pool
from .stats import BrokerStats

log = logging.getLogger("roost.presence")

# Topics per pipeline in a refresh or a sweep (one round trip each batch).
BATCH = 200
# ZSCAN calls (of BATCH registry entries each) at most when listing topics by prefix.
SCAN_ROUNDS = 20


def glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _pairs(flat: list[Any]) -> Iterable[tuple[Any, Any]]:
    """A script's ref, value, ref, value... reply as (ref, value) pairs."""
    return zip(flat[::2], flat[1::2], strict=True)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RedisPresenceStore:
    """Presence entries of every node, in Redis (see the module docstring).

    ``command_timeout``: the deadline of every Redis command (default: a third of
    ``ttl``, between 0.5 and 2 s). ``max_connections``: the pool's size.
    ``signing_key``: entries are signed and only signed ones are read (the broker's
    ``--redis-signing-key``); ``max_entry_bytes``: the bound of one encoded entry;
    ``stats``: where dropped entries are counted (the broker's). ``clock`` (this
    node's wall time, compared with Redis's only to report the skew: expiries are
    Redis's time) and ``timer`` (monotonic, for the fresh-state delay) are injectable
    for tests.
    """

    def __init__(
        self,
        url: str,
        keys: Keys,
        ttl: float = 15.0,
        *,
        command_timeout: float | None = None,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        signing_key: bytes | None = None,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        stats: BrokerStats | None = None,
        **connection_kwargs: Any,
    ) -> None:
        self.keys = keys
        self.stats = stats or BrokerStats()
        self.codec = EntryCodec(signing_key, max_entry_bytes, count=self._count, timer=timer)
        self.node = ""
        self.ttl = ttl
        self.clock = clock
        self.timer = timer
        self.command_timeout = command_timeout or min(2.0, max(0.5, ttl / 3))
        # A blocking pool: a burst of joins (each an add and a list, one short round
        # trip apiece) queues for one of ``max_connections`` connections instead of
        # opening a socket per join (redis-py's default pool opens up to 100 and then
        # refuses; 100 nodes x 200 joins would also crowd Redis' maxclients). A
        # pipeline per join would not help: a join's calls are sequential. Waiting for
        # a connection has the same kind of deadline as a command.
        pool = blocking_pool(
            url,
            max_connections=max_connections,
            timeout=2 * self.command_timeout,
            **{
                "socket_timeout": self.command_timeout,
                "socket_connect_timeout": self.command_timeout,
                # No retry: a timeout is Redis being down (the caller copes), and a
                # sweep run twice could lose the leaves of its first run.
                "retry": Retry(NoBackoff(), 0),
                "health_check_interval": 0,
                **connection_kwargs,
            },
        )
        self._redis: Any = aioredis.Redis.from_pool(pool)
        self._cluster: ClusterPresence | None = None
        self._scripts()
        # topic → ref → this node's entry and its value as stored (signed once)
        self._own: dict[str, dict[str, tuple[Entry, bytes]]] = {}
        self._on_change: Changed | None = None
        self._on_resync: Resync | None = None
        self._resync: set[str] = set()  # topics whose members get a fresh state...
        self._resync_at = 0.0  # ...at this timer() value
        self._tasks: list[asyncio.Task[None]] = []
        self.swept = 0
        self.written_back = 0
        self.skew = 0.0  # seconds this node's clock is ahead of Redis's (last sweep)
        self._skew_told = False

    def _scripts(self) -> None:
        self._add = self._redis.register_script(ADD)
        self._remove = self._redis.register_script(REMOVE)
        self._refresh = self._redis.register_script(REFRESH)
        self._sweep = self._redis.register_script(SWEEP)
        self._list = self._redis.register_script(LIST)
        self._count_live = self._redis.register_script(COUNT)

    async def use_cluster(self, cluster: RedisCluster) -> None:
        """Redis is a cluster (the broker found out at start): its client, a registry
        per slot (presence_cluster.py)."""
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        self._redis = cluster
        self._cluster = ClusterPresence(cluster, self.keys)
        self._scripts()

    async def _queue(self, pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        if self._cluster is not None:
            self._cluster.queue(pipe, script, keys, args)
        else:
            await script(keys=keys, args=args, client=pipe)

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def _keys(self, topic: str) -> list[str]:
        registry = self.registry if self._cluster is None else self._cluster.registry(topic)
        return [self.keys.presence_hash(topic), self.keys.presence_expiries(topic), registry]

    @property
    def registry(self) -> str:
        return f"{self.keys.base}:presence"

    async def _redis_now(self) -> int:
        """Redis's clock (ms); notes how far this node's clock is off."""
        if self._cluster is not None:
            secs, micros = await self._cluster.time()
        else:
            secs, micros = await self._redis.time()
        now = int(secs) * 1000 + int(micros) // 1000
        self.skew = self.clock() - now / 1000
        if abs(self.skew) > 1.0 and not self._skew_told:
            log.warning(
                "this node's clock is %.1f s %s Redis's: presence expiries follow Redis's",
                abs(self.skew),
                "ahead of" if self.skew > 0 else "behind",
            )
        self._skew_told = abs(self.skew) > 1.0
        return now

    def _count(self, dropped: int) -> None:
        self.stats.presence_dropped += dropped

    async def start(self, node: str, on_change: Changed, on_resync: Resync | None = None) -> None:
        self.node = node
        self._on_change = on_change
        self._on_resync = on_resync
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self._refresh_tick), name="roost-presence-refresh"),
            loop.create_task(self._every(self.sweep_all), name="roost-presence-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def _every(self, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await job()
            except Exception as exc:  # Redis down or slow: next period; never stop
                log.debug("presence %s failed: %r", getattr(job, "__name__", job), exc)

    async def add(self, topic: str, entry: Entry) -> None:
        """Raises EntryTooLarge (a ValueError) past ``max_entry_bytes``: nothing kept."""
        value = self.codec.encode(topic, self.node, entry)
        # Remembered first: if Redis is down now, the refresh writes it back later
        # (and announces the join then).
        self._own.setdefault(topic, {})[entry.ref] = (entry, value)
        await self._add(
            keys=self._keys(topic),
            args=[topic, self._ttl_ms, entry.ref, value],
        )

    async def remove(self, topic: str, refs: list[str]) -> list[Entry]:
        own = self._own.get(topic, {})
        for ref in refs:
            own.pop(ref, None)
        if not own:
            self._own.pop(topic, None)
        if not refs:
            return []
        removed = await self._remove(keys=self._keys(topic), args=[topic, self._ttl_ms, *refs])
        return self.codec.read(topic, _pairs(removed))

    async def list(self, topic: str) -> list[Entry]:
        """The topic's live entries (by Redis's clock)."""
        values = await self._list(keys=self._keys(topic)[:2])
        entries = self.codec.read(topic, _pairs(values))
        entries.sort(key=lambda e: (str(e.meta.get("online_at", "")), e.ref))
        return entries

    async def occupancy(self, prefix: str, scan: int) -> dict[str, int]:
        """From the registry (every topic with entries): the first ``scan`` topics
        with ``prefix``, then each one's live entries (ZCOUNT of its expiries from now),
        in one pipeline. On a cluster the registries of every slot are read
        (presence_cluster.py), and that list is reused for ``ttl / 3``."""
        if self._cluster is not None:
            topics = await self._cluster.topics(prefix, scan, self.timer(), self.ttl / 3)
        else:
            topics = await self._scan(prefix, scan)
        if not topics:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                await self._queue(pipe, self._count_live, self._keys(topic)[1:2], [])
            counts = await pipe.execute(raise_on_error=False)
        return {
            t: int(n) for t, n in zip(topics, counts, strict=True) if isinstance(n, int) and n > 0
        }

    async def _scan(self, prefix: str, scan: int) -> builtins.list[str]:
        """Up to ``scan`` registry topics with ``prefix`` (ZSCAN MATCH, at most
        ``SCAN_ROUNDS`` calls of ``BATCH`` each: Redis filters, and the cost is bounded
        however many topics other channel families have)."""
        pattern = glob_escape(prefix) + "*"
        found: builtins.list[str] = []
        cursor = 0
        for _ in range(SCAN_ROUNDS):
            cursor, page = await self._redis.zscan(
                self.registry, cursor, match=pattern, count=BATCH
            )
            found += [_text(topic) for topic, _ in page]
            if cursor == 0 or len(found) >= scan:
                break
        return list(dict.fromkeys(found))[:scan]  # ZSCAN may return one twice

    async def _refresh_tick(self) -> None:
        try:
            await self.refresh_all()
        finally:
            await self.resync_due()

    async def refresh_all(self) -> None:
        """Extend this node's entries; write back (and announce) any Redis lost."""
        topics = list(self._own)
        for batch in _chunks(topics, BATCH):
            async with self._redis.pipeline(transaction=False) as pipe:
                sent = []
                for topic in batch:
                    own = self._own.get(topic)
                    if not own:
                        continue
                    args: list[Any] = [topic, self._ttl_ms]
                    for entry, value in own.values():
                        args += [entry.ref, value]
                    await self._queue(pipe, self._refresh, self._keys(topic), args)
                    sent.append(topic)
                results = await pipe.execute(raise_on_error=False)
            for topic, back in zip(sent, results, strict=True):
                if isinstance(back, Exception):
                    log.warning("presence refresh of %s failed: %r", topic, back)
                    continue
                own = self._own.get(topic, {})
                rewritten = [own[r][0] for r in map(_text, back) if r in own]
                if not rewritten:
                    continue
                log.info("presence: %d entries on %s written back", len(rewritten), topic)
                self.written_back += len(rewritten)
                # Redis lost them: it may have lost other nodes' too, of a node that
                # died meanwhile. Once every live node has written its own back, our
                # members get the whole list again.
                self._resync.add(topic)
                self._resync_at = self.timer() + self.ttl
                if self._on_change is not None:
                    await self._on_change(topic, rewritten, [])

    async def resync_due(self) -> None:
        """Ask Presence for the fresh states that are due (see refresh_all)."""
        if not self._resync or self.timer() < self._resync_at:
            return
        topics = sorted(self._resync)
        self._resync.clear()
        if self._on_resync is None:
            return
        failed = await self._on_resync(topics)
        if failed:  # Redis down again: the next period
            self._resync.update(failed)
            self._resync_at = self.timer() + self.ttl / 3

    async def sweep_all(self) -> None:
        """Remove every expired entry, in every topic; tell Presence who left.

        Topics are picked by Redis's clock (``now``); each topic's script decides on
        Redis's clock again, so a node's own clock never reaps anything."""
        now = await self._redis_now()
        if self._cluster is not None:
            for topics in _chunks(await self._cluster.due(now, BATCH), BATCH):
                await self._sweep_topics(topics)
            return
        # Topics swept never come back in this sweep (their score is now a live
        # expiry, or they are gone); the bound only stops a topic that fails each time.
        rounds = await self._redis.zcount(self.registry, "-inf", now) // BATCH + 1
        for _ in range(rounds):
            raw = await self._redis.zrangebyscore(self.registry, "-inf", now, start=0, num=BATCH)
            if not raw:
                return
            topics = [_text(t) for t in raw]
            await self._sweep_topics(topics)
            if len(topics) < BATCH:
                return

    async def _sweep_topics(self, topics: builtins.list[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                await self._queue(pipe, self._sweep, self._keys(topic), [topic, self._ttl_ms])
            results = await pipe.execute(raise_on_error=False)
        for topic, values in zip(topics, results, strict=True):
            if isinstance(values, Exception):
                log.warning("presence sweep of %s failed: %r", topic, values)
                continue
            entries = self.codec.read(topic, _pairs(values))
            if not entries:
                continue
            self.swept += len(entries)
            log.info("presence: %d expired entries removed from %s", len(entries), topic)
            if self._on_change is not None:
                await self._on_change(topic, [], entries)
