"""Presence on a Redis Cluster: the registry split per slot, so every script stays
single-slot.

On one Redis the registry (topic → its earliest expiry) is one sorted set, written by
the same script as the topic's hash and zset. On a cluster a script may only touch
one slot, so each topic's registry entry lives in a registry of the topic's own slot,
``<prefix>:<app>:presence:{<tag>}`` — ``<tag>`` a precomputed hash tag landing in that
slot (cluster.slot_tags). A sweep reads every registry's due topics in one pipeline
(16,384 ZRANGEBYSCOREs in pages of 2,048, split over the masters by the client: a few
milliseconds of Redis time, but ≈ 0.4 s of the node's CPU in redis-py per sweep, every
``ttl/3`` — ≈ 4 % of a core at the default 30 s), then sweeps those topics.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript

from .cluster import slot_of, slot_tags
from .keys import Keys, tagged

PAGE = 2048  # registries per pipeline


class ClusterPresence:
    def __init__(self, cluster: RedisCluster, keys: Keys) -> None:
        self.cluster = cluster
        self.base = f"{keys.base}:presence"
        # prefix → (when read, topics): the last listing, reused while fresh
        self._listed: dict[str, tuple[float, list[str]]] = {}

    def registry(self, topic: str) -> str:
        return f"{self.base}:{{{slot_tags()[slot_of(tagged(topic))]}}}"

    async def time(self) -> tuple[int, int]:
        """Redis's clock (seconds, microseconds) as one master tells it."""
        secs, micros = await self.cluster.execute_command("TIME", target_nodes=RedisCluster.RANDOM)
        return int(secs), int(micros)

    def queue(
        self, pipe: ClusterPipeline, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> None:
        """A script in a cluster pipeline (redis-py refuses Script objects there): its
        body, so a promoted replica without the script cache runs it too."""
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)

    async def due(self, now: int, limit: int) -> list[str]:
        """Topics whose earliest expiry has passed, at most ``limit`` per slot.

        Read in pipelines of ``PAGE`` registries: one pipeline of all 16,384 took ≈ 0.4 s
        of client CPU on this machine, and on a loaded host its reply could pass the
        command deadline — every registry then read as an error and nothing was swept.
        """
        tags = slot_tags()
        due: list[str] = []
        for start in range(0, len(tags), PAGE):
            async with self.cluster.pipeline(transaction=False) as pipe:
                for tag in tags[start : start + PAGE]:
                    pipe.zrangebyscore(f"{self.base}:{{{tag}}}", "-inf", now, start=0, num=limit)
                results = await pipe.execute(raise_on_error=False)
            due += [
                t.decode() if isinstance(t, bytes) else str(t)
                for result in results
                if not isinstance(result, Exception)
                for t in result
            ]
        return due

    async def topics(self, prefix: str, limit: int, now: float, fresh: float) -> list[str]:
        """Up to ``limit`` topics with ``prefix`` that have entries, from every slot's
        registry (pages of ``PAGE``: the cost of a sweep's listing), reused for ``fresh``
        seconds of ``now``'s clock."""
        listed = self._listed.get(prefix)
        if listed is not None and 0 <= now - listed[0] < fresh:
            return listed[1]
        tags = slot_tags()
        found: list[str] = []
        for start in range(0, len(tags), PAGE):
            async with self.cluster.pipeline(transaction=False) as pipe:
                for tag in tags[start : start + PAGE]:
                    pipe.zrange(f"{self.base}:{{{tag}}}", 0, limit - 1)
                results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, Exception):
                    continue
                for raw in result:
                    topic = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if topic.startswith(prefix):
                        found.append(topic)
            if len(found) >= limit:
                break
        self._listed = {prefix: (now, found[:limit])}
        return found[:limit]
