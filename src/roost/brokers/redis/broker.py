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
import hmac
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from ...protocol import Encoded
from ...pubsub import Deliver, Envelope
from ...pubsub.history import (
    HistoryPolicy,
    HistoryUnavailable,
    Position,
    Recovery,
    StoredMessage,
    recover_from,
    with_offset,
)
from . import codec
from .history import PUBLISH_STORED, READ, parse_entries
from .keys import Keys

log = logging.getLogger("roost.redis")

BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MODES = ("global", "topic")
MAX_BATCH = 256  # envelopes held for one delivery, at most (bounds the first one's wait)

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
    offset_gaps: int = 0
    filled: int = 0
    unfillable: int = 0
    duplicates: int = 0
    rejected: int = 0
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# One queued command of the ordered publisher: a plain PUBLISH (channel, data) or a
# stored publish (script keys and args, and the future awaiting its offset/epoch).
_Plain = tuple[str, bytes]
_Stored = tuple[list[str], list[Any], "asyncio.Future[tuple[int, str]]"]


class RedisBroker:
    delivers_stored = True  # stored broadcasts come back through the subscriber, in order

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
        signing_key: bytes | None = None,
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
        self.signing_key = signing_key
        self.node = ""
        self.instance = os.urandom(8).hex()
        self.connection_kwargs = dict(connection_kwargs)  # TLS files etc., for other clients
        kw = {"socket_connect_timeout": 2.0, "health_check_interval": 0, **connection_kwargs}
        self._pool = ConnectionPool.from_url(url, max_connections=pool_size, **kw)
        # RESP2 on the subscriber: (un)subscribe confirmations and messages come back
        # from read_response() in order, not through RESP3 push handlers.
        self._sub_pool = ConnectionPool.from_url(
            url, max_connections=1, **{**kw, "protocol": 2, "socket_timeout": None}
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._deliver: Deliver | None = None
        # Envelopes decoded in this turn of the event loop (everything one read from
        # Redis held), handed to PubSub together when the turn ends: see _emit.
        self._batch: list[Envelope] = []
        self._wanted: set[str] = set()
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._sub: AbstractConnection | None = None
        self._seq: dict[str, int] = {}
        self._last_seen: dict[tuple[str, str], int] = {}
        self._queue: deque[_Plain | _Stored] = deque()
        self._publish_stored = self._redis.register_script(PUBLISH_STORED)
        self._read_script = self._redis.register_script(READ)
        self._positions: dict[str, tuple[str, int]] = {}
        self._filling: dict[str, list[Envelope]] = {}
        self.drop_next = 0  # test hook: drop this many incoming stored messages
        # Metrics hooks (seconds): a publish round trip; origin-to-here delivery lag.
        self.observe_publish: Callable[[float], None] | None = None
        self.observe_lag: Callable[[float], None] | None = None
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
        ts = int(time.time() * 1000)
        mac = self._sign(envelope, envelope.payload.data, ts)
        self._queue.append((channel, codec.encode(envelope, seq, ts, mac)))
        self._queue_event.set()

    def _sign(self, env: Envelope, payload: bytes, ts_ms: int) -> str | None:
        if self.signing_key is None:
            return None
        return codec.sign(self.signing_key, env.node, env.topic, env.event, payload, ts_ms)

    def _trusted(self, m: StoredMessage, topic: str) -> bool:
        """A stream entry's signature holds (always true without a signing key)."""
        if self.signing_key is None:
            return True
        want = codec.sign(
            self.signing_key, m.node, topic, m.event, codec.unsplice(m.payload, m.offset), m.ts_ms
        )
        if m.mac is not None and hmac.compare_digest(want, m.mac):
            return True
        self.stats.rejected += 1
        log.warning("history entry %s/%d failed its signature check: dropped", topic, m.offset)
        return False

    async def _publisher(self) -> None:
        """Send queued commands in order, everything queued in one pipelined round trip."""
        failures = 0
        while True:
            await self._queue_event.wait()
            self._queue_event.clear()
            while self._queue:
                batch = list(self._queue)
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for item in batch:
                            if len(item) == 2:
                                pipe.publish(item[0], item[1])
                            else:
                                await self._publish_stored(keys=item[0], args=item[1], client=pipe)
                        t0 = time.monotonic()
                        results = await pipe.execute(raise_on_error=False)
                        if self.observe_publish is not None:
                            self.observe_publish(time.monotonic() - t0)
                except (RedisError, OSError) as exc:
                    # Redis is down: plain broadcasts queued now are lost for other nodes
                    # (local delivery already happened); stored ones fail to their caller.
                    failures += 1
                    for item in batch:
                        self._queue.popleft()
                        if len(item) == 3 and not item[2].done():
                            item[2].set_exception(HistoryUnavailable(str(exc)))
                    self.stats.publish_errors += len(batch)
                    if failures == 1 or failures % 100 == 0:
                        log.warning("redis publish failed (%d lost): %r", len(batch), exc)
                    await asyncio.sleep(BACKOFF[min(failures - 1, 2)])
                    continue
                failures = 0
                for item, result in zip(batch, results, strict=True):
                    self._queue.popleft()
                    if len(item) == 3:
                        fut = item[2]
                        if fut.done():
                            continue
                        if isinstance(result, Exception):
                            fut.set_exception(HistoryUnavailable(str(result)))
                        else:
                            fut.set_result((int(result[0]), _text(result[1])))
                self.stats.published += len(batch)

    async def publish_stored(self, envelope: Envelope, policy: HistoryPolicy) -> Envelope:
        """Store in the topic's stream and publish, in one script; wait for its offset."""
        payload = envelope.payload
        if payload.binary:
            raise ValueError("history stores JSON object payloads, not binary")
        if len(self._queue) >= self.max_queue:
            self.stats.dropped += 1
            raise HistoryUnavailable("publish queue full")
        topic = envelope.topic
        channel = self.channel_for(topic)
        seq = self._seq.get(channel, 0) + 1
        self._seq[channel] = seq
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        keys = [self.keys.history_meta(topic), self.keys.history_stream(topic)]
        ts = int(time.time() * 1000)
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
        ]
        self._queue.append((keys, args, fut))
        self._queue_event.set()
        offset, epoch = await fut
        return Envelope(
            envelope.node,
            seq,
            topic,
            envelope.event,
            Encoded(with_offset(payload.data, offset)),
            envelope.exclude,
            offset,
            epoch,
        )

    async def history(self, topic: str, since: Position | None, policy: HistoryPolicy) -> Recovery:
        now = int(time.time() * 1000)
        try:
            if since is not None:
                current, window = await self._read_history(
                    topic, since.offset, policy.max_len + 1, policy
                )
                recovery = recover_from(since, current, window, policy, now)
                if recovery.recovered:
                    return recovery
            current, window = await self._read_history(topic, -1, policy.recent, policy)
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(str(exc)) from exc
        return recover_from(None, current, window, policy, now)

    async def _read_history(
        self, topic: str, after: int, count: int, policy: HistoryPolicy
    ) -> tuple[Position, list[StoredMessage]]:
        keys = [self.keys.history_meta(topic), self.keys.history_stream(topic)]
        epoch, top, entries = await self._read_script(
            keys=keys, args=[os.urandom(6).hex(), policy.max_age_ms, after, count]
        )
        messages = [m for m in parse_entries(entries) if self._trusted(m, topic)]
        if after < 0:
            messages.reverse()
        return Position(int(top), _text(epoch)), messages

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
                # Anything arriving proves the subscription alive (a busy node may be
                # far behind its own probe; that is a backlog, not a stall).
                self._probe_seen = time.monotonic()
                if channel == probe:
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
        if self.signing_key is not None and not codec.verify(self.signing_key, wire):
            self.stats.rejected += 1
            log.warning("dropped an envelope on %s that failed its signature check", channel)
            return
        if self.drop_next and env.offset is not None and env.node != self.node:
            self.drop_next -= 1
            return
        if env.node != self.node:
            self.stats.received += 1
            self._count_gap(env, channel)
            if self.observe_lag is not None:
                self.observe_lag(max(0.0, time.time() - wire.ts_ms / 1000))
        if env.offset is not None:
            self._in_order(env)
        elif env.node != self.node:  # our own plain echo was delivered locally already
            self._emit(env)

    def _count_gap(self, env: Envelope, channel: bytes) -> None:
        """Per origin and channel, sequence numbers come one by one; count any jump."""
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

    # -- stored broadcasts: in offset order, gaps filled from the stream -------------------
    def _in_order(self, env: Envelope) -> None:
        topic = env.topic
        pending = self._filling.get(topic)
        if pending is not None:
            pending.append(env)
            return
        assert env.offset is not None and env.epoch is not None
        pos = self._positions.get(topic)
        if pos is None or pos[0] != env.epoch or env.offset == pos[1] + 1:
            self._positions[topic] = (env.epoch, env.offset)
            self._emit(env)
        elif env.offset <= pos[1]:
            self.stats.duplicates += 1
        else:
            self.stats.offset_gaps += 1
            log.warning(
                "offset gap on %s: have %d, got %d; filling from the stream",
                topic,
                pos[1],
                env.offset,
            )
            self._filling[topic] = [env]
            task = asyncio.get_running_loop().create_task(self._fill(topic, env.epoch, pos[1]))
            self._tasks.append(task)
            task.add_done_callback(self._tasks_done)

    def _tasks_done(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _fill(self, topic: str, epoch: str, last: int) -> None:
        pending = self._filling[topic]
        target = pending[0].offset or 0
        try:
            entries = await self._redis.xrange(
                self.keys.history_stream(topic), min=f"({last}-0", max=f"({target}-0"
            )
            for m in parse_entries(list(entries or [])):
                if m.offset <= last or not self._trusted(m, topic):
                    continue
                self.stats.filled += 1
                last = m.offset
                self._emit(
                    Envelope("", 0, topic, m.event, Encoded(m.payload), None, m.offset, epoch)
                )
        except (RedisError, OSError) as exc:
            log.warning("could not fill the gap on %s: %r", topic, exc)
        if last < target - 1:
            self.stats.unfillable += target - 1 - last
            log.warning("%d message(s) on %s are gone from the stream", target - 1 - last, topic)
        self._positions[topic] = (epoch, target - 1)
        queued = self._filling.pop(topic, [])
        for env in queued:
            self._in_order(env)

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

    def _deliver_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch and self._deliver is not None:
            self._deliver(batch)

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe(url: str) -> str:
    """The URL without its password (in the user info or the query), for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user + ':***@' if user else '***@'}{host}"
    base, q, query = rest.partition("?")
    if q:
        parts = [
            f"{key}=***" if key.lower() in ("password", "pass", "pwd") else f"{key}{eq}{value}"
            for key, eq, value in (item.partition("=") for item in query.split("&"))
        ]
        rest = base + "?" + "&".join(parts)
    return f"{scheme}{sep}{rest}"
