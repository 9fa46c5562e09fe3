"""Presence in Redis: per topic a hash (phx_ref → entry) and a zset (phx_ref → expiry).

    hash <prefix>:<app>:p:{topic}    phx_ref → {"k": key, "m": meta}
    zset <prefix>:<app>:pz:{topic}   phx_ref → expiry (ms)
    zset <prefix>:<app>:presence     topic → last change (ms): the topics to sweep

Each node refreshes its own entries' expiry every ``ttl/3``. A node that dies
(kill -9, no goodbye) stops refreshing; every node sweeps expired entries every
``ttl/3`` with one script per topic that removes them and returns them, so exactly one
node gets each dead entry and broadcasts its leave. A node that finds one of its own
live entries missing (Redis restarted) writes it back and announces the join again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...pubsub.presence import Changed, Entry
from .keys import Keys

log = logging.getLogger("roost.presence")

ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1
"""

REMOVE = """
local out = {}
for _, ref in ipairs(ARGV) do
  local v = redis.call('HGET', KEYS[1], ref)
  if v then
    redis.call('HDEL', KEYS[1], ref)
    redis.call('ZREM', KEYS[2], ref)
    table.insert(out, v)
  end
end
return out
"""

# ARGV: expiry, then ref/value pairs. Returns the refs that had to be written back.
REFRESH = """
local back = {}
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    table.insert(back, ARGV[i])
  end
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
end
return back
"""

# ARGV: now, topic. Removes and returns every expired entry of the topic.
SWEEP = """
local refs = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {}
for _, ref in ipairs(refs) do
  local v = redis.call('HGET', KEYS[1], ref)
  redis.call('HDEL', KEYS[1], ref)
  redis.call('ZREM', KEYS[2], ref)
  if v then table.insert(out, v) end
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('DEL', KEYS[1])
end
return out
"""


def _encode(entry: Entry) -> bytes:
    return orjson.dumps({"k": entry.key, "m": entry.meta})


def _decode(value: bytes) -> Entry | None:
    try:
        data = orjson.loads(value)
        return Entry(str(data["m"]["phx_ref"]), str(data["k"]), data["m"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class RedisPresenceStore:
    def __init__(self, url: str, keys: Keys, ttl: float = 15.0, **connection_kwargs: Any) -> None:
        self.keys = keys
        self.ttl = ttl
        self._redis = aioredis.Redis.from_url(url, **connection_kwargs)
        self._add = self._redis.register_script(ADD)
        self._remove = self._redis.register_script(REMOVE)
        self._refresh = self._redis.register_script(REFRESH)
        self._sweep = self._redis.register_script(SWEEP)
        self._own: dict[str, dict[str, Entry]] = {}
        self._on_change: Changed | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.swept = 0

    def _keys(self, topic: str) -> list[str]:
        base = self.keys.base
        return [f"{base}:p:{{{topic}}}", f"{base}:pz:{{{topic}}}", f"{base}:presence"]

    def _expiry(self) -> int:
        return int((time.time() + self.ttl) * 1000)

    async def start(self, node: str, on_change: Changed) -> None:
        self._on_change = on_change
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.refresh_all), name="roost-presence-refresh"),
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

    async def _every(self, job: Any) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await job()
            except (RedisError, OSError) as exc:
                log.debug("presence %s failed: %r", job.__name__, exc)

    async def add(self, topic: str, entry: Entry) -> None:
        # Remembered first: if Redis is down now, the refresh writes it back later
        # (and announces the join then).
        self._own.setdefault(topic, {})[entry.ref] = entry
        now = int(time.time() * 1000)
        await self._add(
            keys=self._keys(topic),
            args=[entry.ref, _encode(entry), self._expiry(), now, topic],
        )

    async def remove(self, topic: str, refs: list[str]) -> list[Entry]:
        own = self._own.get(topic, {})
        for ref in refs:
            own.pop(ref, None)
        if not own:
            self._own.pop(topic, None)
        values = await self._remove(keys=self._keys(topic)[:2], args=refs)
        return [e for e in map(_decode, values) if e is not None]

    async def list(self, topic: str) -> list[Entry]:
        hkey, zkey, _ = self._keys(topic)
        now = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(hkey)
            pipe.zrangebyscore(zkey, now, "+inf")
            values, alive = await pipe.execute()
        live = set(alive)
        entries = []
        for ref, value in values.items():
            if ref in live:
                entry = _decode(value)
                if entry is not None:
                    entries.append(entry)
        entries.sort(key=lambda e: (str(e.meta.get("online_at", "")), e.ref))
        return entries

    async def refresh_all(self) -> None:
        expiry = self._expiry()
        for topic, own in list(self._own.items()):
            args: list[Any] = [expiry]
            for entry in own.values():
                args += [entry.ref, _encode(entry)]
            back = await self._refresh(keys=self._keys(topic)[:2], args=args)
            rewritten = [own[r.decode()] for r in back if r.decode() in own]
            if rewritten:
                log.info("presence: %d entries on %s written back", len(rewritten), topic)
                if self._on_change is not None:
                    await self._on_change(topic, rewritten, [])

    async def sweep_all(self) -> None:
        registry = self._keys("")[2]
        now = int(time.time() * 1000)
        topics = await self._redis.zrange(registry, 0, 999)
        for raw in topics:
            topic = raw.decode() if isinstance(raw, bytes) else str(raw)
            values = await self._sweep(keys=self._keys(topic), args=[now, topic])
            if not values:
                continue
            entries = [e for e in map(_decode, values) if e is not None]
            self.swept += len(entries)
            log.info("presence: %d expired entries removed from %s", len(entries), topic)
            if self._on_change is not None and entries:
                await self._on_change(topic, [], entries)
