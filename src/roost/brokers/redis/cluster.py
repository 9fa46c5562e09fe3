"""Redis Cluster: detection, the command client, the shard map and a hash tag per slot.

A node started with ``--redis redis://<any cluster node>`` finds out at start that the
server is a cluster node (``INFO cluster`` says ``cluster_enabled:1``) and switches to
the cluster parts: commands and Lua scripts go through redis-py's asyncio
``RedisCluster`` (it routes EVAL/EVALSHA by their first key and follows MOVED/ASK),
Pub/Sub goes over sharded channels (``shards.py``: one SSUBSCRIBE connection per
master). Every per-topic key and channel carries the ``{topic}`` hash tag, so a
topic's stream, meta, presence and channel share a slot and every script stays
single-slot.

Why redis-py and not coredis: redis-py 8.1 (already the dependency) has an asyncio
``RedisCluster`` that routes scripts by key, and an asyncio ``ClusterPubSub`` with
``ssubscribe``; but roost needs each (re)subscription's confirmation and each loss
per connection (the cursors catch up from them), which its ``ClusterPubSub`` hides. So
the subscriber side is our own (plain RESP2 connections, one per master, like the
single-Redis subscriber) and the command side is redis-py's. coredis would add a
dependency for the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from .connection import REDIS_ERRORS, RedisConnection
from .history import PUBLISH_STORED

SLOTS = 16384
# redis-py's cluster client raises RedisClusterException (not a RedisError) for a slot
# it has no master for: a moment of a failover, like a connection error.
CLUSTER_ERRORS = (*REDIS_ERRORS, RedisClusterException)

# The stored publish on a cluster: the same script, publishing on the topic's sharded
# channel (same slot as its keys: ``{topic}``).
PUBLISH_STORED_SHARDED = PUBLISH_STORED.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")
assert PUBLISH_STORED_SHARDED != PUBLISH_STORED


class ClusterRefused(RuntimeError):
    """The node cannot run on this Redis Cluster as configured."""


async def is_cluster(connection: RedisConnection) -> bool:
    """Whether the Redis behind ``connection`` is a cluster node."""
    try:
        info = await connection.redis.info("cluster")
    except ResponseError:  # INFO not allowed (ACL): taken for a single Redis
        return False
    return bool(int(info.get("cluster_enabled", 0)))


def slot_of(name: str) -> int:
    return int(key_slot(name.encode()))


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For every slot, a short hash tag that lands in it.

    Centrifugo precomputes its partitions' hash tags so that N partitions spread evenly
    over the masters; here a tag per slot lets a key live in any chosen slot (a
    topic's presence registry in the topic's own slot, a subscriber's probe channel on
    a slot of its own master). About 170k CRC16s, once per process, on a cluster only.
    """
    tags: list[str | None] = [None] * SLOTS
    missing, i = SLOTS, 0
    while missing:
        tag = format(i, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        i += 1
    return tuple(t or "" for t in tags)


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (scheme, credentials, query) pointed at another cluster node."""
    parts = urlsplit(url)
    creds = parts.netloc.rpartition("@")[0]
    netloc = f"{creds}@{host}:{port}" if creds else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "", parts.query, ""))


class _Gate:
    """At most ``size`` commands or pipelines in flight, a wait for a place bounded by
    ``timeout``: the blocking pool of one Redis (connection.py), for a cluster.

    redis-py's cluster client raises ``MaxConnectionsError`` at once when a master's
    pool is busy: a burst of 300 joins had 264 refused. Each command or pipeline holds
    at most one connection per master, so ``size`` ≤ every master's pool never fails.
    """

    def __init__(self, size: int, timeout: float) -> None:
        self.places = asyncio.Semaphore(size)
        self.timeout = timeout

    @contextlib.asynccontextmanager
    async def place(self) -> Any:
        try:
            await asyncio.wait_for(self.places.acquire(), self.timeout)
        except TimeoutError:
            raise TimeoutError("every cluster connection stayed busy") from None
        try:
            yield
        finally:
            self.places.release()


class GatedCluster(RedisCluster):
    """RedisCluster whose commands and pipelines queue for a place (``_Gate``)."""

    gate: _Gate

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate.place():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's


class _GatedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, GatedCluster)
        async with client.gate.place():
            return await super().execute(raise_on_error, allow_redirections)


class ClusterConnection(RedisConnection):
    """The cluster's command client (``redis`` is a ``RedisCluster``), its health, and
    a subscriber connection factory per master."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        pool_size: int,
        clock: Callable[[], float],
        **connection_kwargs: Any,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self.connection_kwargs = dict(connection_kwargs)
        self._kw = {
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
            **connection_kwargs,
        }
        # No retries by the client (it would run a whole pipeline again after one
        # master's connection error: stored publishes twice); the callers decide, as on
        # one Redis. A connection error still makes it re-read the shard map.
        self.cluster = GatedCluster.from_url(
            url,
            socket_timeout=timeout,
            max_connections=pool_size,
            retry=Retry(NoBackoff(), 0),
            **self._kw,
        )
        assert isinstance(self.cluster, GatedCluster)
        self.cluster.gate = _Gate(pool_size, timeout)
        self.redis = self.cluster  # type: ignore[assignment]  # the same command API
        self._sub_pools: dict[str, ConnectionPool] = {}
        self.responsive = False
        self.last_ok = 0.0

    async def ping(self) -> bool:
        try:
            return await super().ping()
        except RedisClusterException:  # no master for some slot yet
            self.responsive = False
            return False

    def subscriber(self) -> AbstractConnection:
        raise TypeError("a cluster has one subscriber connection per master: node_subscriber()")

    def node_subscriber(self, host: str, port: int) -> AbstractConnection:
        """A new, unconnected RESP2 connection to one cluster node (no read deadline)."""
        name = f"{host}:{port}"
        pool = self._sub_pools.get(name)
        if pool is None:
            pool = ConnectionPool.from_url(
                node_url(self.url, host, port),
                max_connections=1,
                **{**self._kw, "protocol": 2, "socket_timeout": None},
            )
            self._sub_pools[name] = pool
        return pool.make_connection()  # type: ignore[no-untyped-call,no-any-return]

    async def refresh(self) -> None:
        """Read the shard map again (after MOVED, a lost master, a migration)."""
        await self.cluster.nodes_manager.initialize()

    def owner(self, channel: str) -> tuple[str, int]:
        """The master serving the channel's slot, as the client last learned it."""
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise RedisClusterException(f"no master serves {channel}")
        return node.host, int(node.port)

    def masters(self) -> list[tuple[str, int]]:
        return [(n.host, int(n.port)) for n in self.cluster.get_primaries()]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.cluster.aclose()
        for pool in self._sub_pools.values():
            with contextlib.suppress(Exception):
                await pool.disconnect()
