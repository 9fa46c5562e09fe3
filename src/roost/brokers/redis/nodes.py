"""Node names on a shared Redis: a key per node, claimed at start, kept while alive.

Two live nodes cannot share a name: the second one's claim fails. The key has a
TTL and is refreshed every ``ttl/3``; a node that dies frees its name within ``ttl``.
A restarted worker (``roost serve --workers``) takes its name back at once: its
supervisor saw the predecessor exit and passes the predecessor's claim as
``takeover``; only a key still holding exactly that claim is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from .connection import REDIS_ERRORS
from .keys import Keys, check_node

log = logging.getLogger("roost.redis")

# Refresh the node key only if it is still ours; claim it again if it vanished
# (a Redis restart without persistence); report a foreign owner.
REFRESH = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return -1
"""
TAKEOVER = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: Names ``registered`` reads at most (a registry is a handful of nodes).
MAX_LISTED = 1000


async def registered(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """Every node name holding a key on this Redis (every master of a Cluster): the
    live nodes, and the dead ones whose key has not expired yet."""
    names: set[str] = set()
    async for key in redis.scan_iter(match=keys.node_pattern, count=500):
        name = keys.node_of(key.decode() if isinstance(key, bytes) else key)
        if name is not None:
            names.add(name)
        if len(names) >= MAX_LISTED:
            break
    return sorted(names)


class DuplicateNodeError(RuntimeError):
    """Another live node already holds this node name."""


class NodeName:
    """This node's claim on its name."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        node: str,
        instance: str,
        ttl: float,
        takeover: str | None = None,
    ) -> None:
        self.redis = redis
        self.key = keys.node_key(check_node(node))  # a brace would move a probe's tag
        self.node = node
        self.instance = instance
        self.ttl = ttl
        self.takeover = takeover

    async def claim(self) -> None:
        ok = await self.redis.set(self.key, self.instance, nx=True, px=int(self.ttl * 1000))
        if not ok and self.takeover:
            ok = await self.redis.eval(
                TAKEOVER, 1, self.key, self.instance, self.takeover, int(self.ttl * 1000)
            )
            if ok:
                log.info("node name %r taken over from the worker before this one", self.node)
        if not ok:
            raise DuplicateNodeError(
                f"node name {self.node!r} is already in use by a live node on this Redis "
                f"(key {self.key} expires within {self.ttl:g}s of that node stopping); "
                "start this node with another --node/NODE"
            )

    async def keep(self) -> None:
        """Refresh the claim forever (a task)."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                result = await self.redis.eval(
                    REFRESH, 1, self.key, self.instance, int(self.ttl * 1000)
                )
            except REDIS_ERRORS as exc:
                log.debug("node refresh failed: %r", exc)
                continue
            if result == -1:
                log.error("node name %r was taken by another node; names must be unique", self.node)
            elif result == 2:
                log.info("node name %r claimed again (Redis lost it)", self.node)

    async def release(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.eval(RELEASE, 1, self.key, self.instance)
