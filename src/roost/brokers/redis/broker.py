"""The Redis broker: broadcasts between nodes over Redis Pub/Sub.

One subscriber connection per node (owned here, reconnected with backoff, every
wanted channel resubscribed), and an ordered, pipelined publisher. Two routing modes:

- ``global``: one channel for everything, every node gets every broadcast
  (what phoenix_pubsub_redis does);
- ``topic``: one channel per topic; a node subscribes only while it has local
  subscribers, and ``subscribe`` returns once Redis confirmed the SUBSCRIBE.

A node claims its name (a key with a TTL, refreshed) so two live nodes cannot share
one; a liveness probe (a message to itself every few seconds) restarts a subscription
that silently stopped delivering; per-origin sequence numbers count lost messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from ...pubsub import Deliver, Envelope
from . import codec
from .keys import Keys

log = logging.getLogger("roost.redis")

BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MODES = ("global", "topic")

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
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DuplicateNodeError(RuntimeError):
    """Another live node already holds this node name."""


@dataclass
class BrokerStats:
    published: int = 0
    publish_errors: int = 0
    dropped: int = 0
    received: int = 0
    invalid: int = 0
    gaps: int = 0
    missed: int = 0
    reconnects: int = 0
    probe_restarts: int = 0
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        mode: str = "topic",
        keys: Keys | None = None,
        node_ttl: float = 15.0,
        probe_interval: float = 5.0,
        probe_timeout: float | None = None,
        subscribe_timeout: float = 5.0,
        max_queue: int = 100_000,
        pool_size: int = 5,
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
        self.max_queue = max_queue
        self.stats = BrokerStats()
        self.node = ""
        self.instance = os.urandom(8).hex()
        kw = {"socket_connect_timeout": 2.0, "health_check_interval": 0, **connection_kwargs}
        self._pool = ConnectionPool.from_url(url, max_connections=pool_size, **kw)
        # RESP2 on the subscriber: (un)subscribe confirmations and messages come back
        # from read_response() in order, not through RESP3 push handlers.
        self._sub_pool = ConnectionPool.from_url(
            url, max_connections=1, **{**kw, "protocol": 2, "socket_timeout": None}
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._deliver: Deliver | None = None
        self._wanted: set[str] = set()
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._sub: AbstractConnection | None = None
        self._seq: dict[str, int] = {}
        self._last_seen: dict[tuple[str, str], int] = {}
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queue_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._probe_seen = time.monotonic()
        self._up = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, node: str, deliver: Deliver) -> None:
        self.node = node
        self._deliver = deliver
        if self.mode == "global":
            self._wanted.add(self.keys.global_channel)
        self._wanted.add(self.keys.probe_channel(node))
        await self._wait_for_redis()
        await self._claim()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._subscriber(), name="roost-redis-subscriber"),
            loop.create_task(self._publisher(), name="roost-redis-publisher"),
            loop.create_task(self._refresher(), name="roost-redis-node"),
            loop.create_task(self._prober(), name="roost-redis-probe"),
        ]
        try:
            await asyncio.wait_for(self._up.wait(), self.subscribe_timeout * 2)
        except TimeoutError:
            log.warning("redis subscription not confirmed yet; continuing, it will retry")
        log.info(
            "redis broker up url=%s mode=%s channel=%s", _safe(self.url), self.mode, self.keys.base
        )

    async def stop(self) -> None:
        self._stopping = True
        await self._flush(timeout=2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.eval(RELEASE, 1, self.keys.node_key(self.node), self.instance)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.disconnect()
        with contextlib.suppress(Exception):
            await self._redis.aclose()
            await self._pool.disconnect()
            await self._sub_pool.disconnect()

    async def _wait_for_redis(self) -> None:
        attempt = 0
        while True:
            try:
                await self._redis.ping()
                if attempt:
                    log.info("redis reachable at %s", _safe(self.url))
                return
            except (RedisError, OSError) as exc:
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                log.warning(
                    "redis unreachable at %s (%s); retrying in %.1fs", _safe(self.url), exc, delay
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def _claim(self) -> None:
        key = self.keys.node_key(self.node)
        ok = await self._redis.set(key, self.instance, nx=True, px=int(self.node_ttl * 1000))
        if not ok:
            raise DuplicateNodeError(
                f"node name {self.node!r} is already in use by a live node on this Redis "
                f"(key {key} expires within {self.node_ttl:g}s of that node stopping); "
                "start this node with another --node/NODE"
            )

    async def _refresher(self) -> None:
        key = self.keys.node_key(self.node)
        while True:
            await asyncio.sleep(self.node_ttl / 3)
            try:
                result = await self._redis.eval(
                    REFRESH, 1, key, self.instance, int(self.node_ttl * 1000)
                )
                if result == -1:
                    log.error(
                        "node name %r was taken by another node; names must be unique", self.node
                    )
                elif result == 2:
                    log.info("node name %r claimed again (Redis lost it)", self.node)
            except (RedisError, OSError) as exc:
                log.debug("node refresh failed: %r", exc)

    # -- publishing --------------------------------------------------------------------
    def channel_for(self, topic: str) -> str:
        return self.keys.global_channel if self.mode == "global" else self.keys.topic_channel(topic)

    async def publish(self, envelope: Envelope) -> None:
        """Queue the envelope on the ordered publisher; never blocks, never raises."""
        if len(self._queue) >= self.max_queue:
            self.stats.dropped += 1
            return
        channel = self.channel_for(envelope.topic)
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        self._queue.append((channel, codec.encode(envelope, seq, int(time.time() * 1000))))
        self._queue_event.set()

    async def _publisher(self) -> None:
        """Send queued envelopes in order, everything queued in one pipelined round trip."""
        failures = 0
        while True:
            await self._queue_event.wait()
            self._queue_event.clear()
            while self._queue:
                batch = list(self._queue)
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            pipe.publish(channel, data)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    # Redis is down: what was queued is lost for other nodes (local
                    # delivery already happened). Count it and keep going.
                    failures += 1
                    for _ in batch:
                        self._queue.popleft()
                    self.stats.publish_errors += len(batch)
                    if failures == 1 or failures % 100 == 0:
                        log.warning("redis publish failed (%d lost): %r", len(batch), exc)
                    await asyncio.sleep(BACKOFF[min(failures - 1, 2)])
                    continue
                failures = 0
                for _ in batch:
                    self._queue.popleft()
                self.stats.published += len(batch)

    async def _flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- subscribing -------------------------------------------------------------------
    async def subscribe(self, topic: str) -> None:
        if self.mode == "global":
            return
        channel = self.keys.topic_channel(topic)
        self._wanted.add(channel)
        sub = self._sub
        if sub is None:
            return  # down: the reconnect subscribes every wanted channel
        fut = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(fut)
        try:
            await sub.send_command("SUBSCRIBE", channel)
            await asyncio.wait_for(asyncio.shield(fut), self.subscribe_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("subscribe %s not confirmed: %r", channel, exc)

    async def unsubscribe(self, topic: str) -> None:
        if self.mode == "global":
            return
        channel = self.keys.topic_channel(topic)
        self._wanted.discard(channel)
        for node, ch in [k for k in self._last_seen if k[1] == channel]:
            del self._last_seen[(node, ch)]
        sub = self._sub
        if sub is not None:
            with contextlib.suppress(RedisError, OSError):
                await sub.send_command("UNSUBSCRIBE", channel)

    async def _subscriber(self) -> None:
        attempt = 0
        while True:
            sub = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await sub.connect()
                channels = sorted(self._wanted)
                for ch in channels:
                    self._confirm.setdefault(ch, [])
                self._sub = sub
                await sub.send_command("SUBSCRIBE", *channels)
                if attempt:
                    self.stats.reconnects += 1
                    log.info(
                        "redis subscriber reconnected; resubscribed %d channels", len(channels)
                    )
                attempt = 0
                self._probe_seen = time.monotonic()
                await self._read(sub, set(channels))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.stats.connected or attempt == 0:
                    log.warning("redis subscriber connection lost: %r", exc)
            finally:
                self._sub = None
                self.stats.connected = False
                self._up.clear()
                with contextlib.suppress(Exception):
                    await sub.disconnect()
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            await asyncio.sleep(delay)

    async def _read(self, sub: AbstractConnection, initial: set[str]) -> None:
        probe = self.keys.probe_channel(self.node).encode()
        pending = {c.encode() for c in initial}
        while True:
            reply = await sub.read_response(disconnect_on_error=True)
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = reply[0]
            if kind == b"message":
                channel, data = reply[1], reply[2]
                if channel == probe:
                    self._probe_seen = time.monotonic()
                    continue
                self._on_message(channel, data)
            elif kind == b"subscribe":
                name = reply[1].decode()
                for fut in self._confirm.pop(name, []):
                    if not fut.done():
                        fut.set_result(None)
                if pending:
                    pending.discard(reply[1])
                    if not pending:
                        self.stats.connected = True
                        self._up.set()

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            wire = codec.decode(data)
        except codec.EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning("dropped a message on %s that is not a roost envelope: %s", channel, exc)
            return
        env = wire.envelope
        if env.node == self.node:
            return  # our own echo: delivered locally already
        self.stats.received += 1
        key = (env.node, channel.decode())
        last = self._last_seen.get(key)
        if last is not None and env.seq > last + 1:
            missed = env.seq - last - 1
            self.stats.gaps += 1
            self.stats.missed += missed
            log.warning(
                "gap from node=%s channel=%s: %d message(s) missed", env.node, key[1], missed
            )
        self._last_seen[key] = env.seq
        if self._deliver is not None:
            self._deliver(env)

    # -- liveness ----------------------------------------------------------------------
    async def _prober(self) -> None:
        channel = self.keys.probe_channel(self.node)
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await self._redis.publish(channel, b"probe")
            except (RedisError, OSError):
                self._probe_seen = time.monotonic()  # Redis is down: nothing to judge
                continue
            sub = self._sub
            if sub is None:
                continue
            if time.monotonic() - self._probe_seen > self.probe_timeout:
                self.stats.probe_restarts += 1
                log.warning(
                    "liveness probe not received for %.1fs: restarting the subscriber",
                    time.monotonic() - self._probe_seen,
                )
                self._probe_seen = time.monotonic()
                with contextlib.suppress(Exception):
                    await sub.disconnect()

    async def simulate_silent_stall(self) -> None:
        """Test hook: unsubscribe everything behind the broker's back."""
        if self._sub is not None:
            await self._sub.send_command("UNSUBSCRIBE")


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
