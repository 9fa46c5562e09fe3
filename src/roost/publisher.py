"""``roost.publish``: a broadcast into roost from any Python process sharing Redis.

    import roost
    roost.publish("redis://localhost:6379", "rooms:lobby", "announce", {"text": "hi"})

Django views, Celery workers and scripts reach every browser in the room on every
node. ``app``/``prefix``/``mode`` must match the nodes' ``--app``/``--redis-prefix``/
``--pubsub-mode``; ``store=True`` keeps it in the room's history (the chat keeps
``new:msg``), and returns its offset.

On a Redis Cluster (found as the nodes find it: ``INFO cluster``) the broadcast goes
out as SPUBLISH on the topic's sharded channel and the stored one through the sharded
history script, each sent to the master of the topic's slot; a plain PUBLISH would
reach no node there. Passing ``client`` (a ``Redis`` or a ``RedisCluster``) skips the
detection: a ``RedisCluster`` client is taken for a cluster.

``wire="phoenix"`` pushes into a Phoenix application's channels instead, through its
Redis: the message phoenix_pubsub_redis 3.x publishes for ``Endpoint.broadcast`` on
``phx:Elixir.<phoenix_pubsub>.Adapter`` (``phoenix_channel`` to name the channel
itself), from node ``node``; the payload (a JSON object, or bytes) arrives as a map with
binary keys, or atom keys with ``atom_keys=True``. No history, no signature there.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .brokers.redis import codec, phoenix_codec
from .brokers.redis.cluster import PUBLISH_STORED_SHARDED, is_cluster
from .brokers.redis.connection import RedisConnection
from .brokers.redis.history import PUBLISH_STORED
from .brokers.redis.keys import Keys
from .protocol import Encoded
from .protocol.etf import EtfError
from .pubsub import Envelope, HistoryPolicy

_SEQ = itertools.count(1)
NODE = f"publisher-{socket.gethostname()}-{os.getpid()}"


async def publish_async(
    redis_url: str,
    topic: str,
    event: str,
    payload: Any,
    *,
    app: str = "chat",
    prefix: str = "roost",
    mode: str = "topic",
    store: bool = False,
    history: HistoryPolicy | None = None,
    signing_key: bytes | None = None,
    client: aioredis.Redis | RedisCluster | None = None,
    wire: str = "roost",
    phoenix_pubsub: str = "Chat.PubSub",
    phoenix_channel: str | None = None,
    node: str | None = None,
    atom_keys: bool = False,
    compressed: int = 0,
) -> int | None:
    """Publish one broadcast; return its history offset when ``store``, else None."""
    if wire == "phoenix":
        if store or signing_key is not None:
            raise ValueError("Phoenix's wire has no history and no signature")
        channel = phoenix_channel or phoenix_codec.channel_for(phoenix_pubsub)
        try:
            data = phoenix_codec.encode_broadcast(
                node or NODE, topic, event, Encoded.of(payload),
                compressed=compressed, atom_keys=atom_keys,
            )  # fmt: skip
        except EtfError as exc:  # a payload Phoenix cannot take (not a JSON object)
            raise ValueError(str(exc)) from None
        await _publish_raw(redis_url, client, channel, data)
        return None
    if wire != "roost":
        raise ValueError(f"wire must be roost or phoenix, not {wire!r}")
    keys = Keys(prefix, app)
    channel = keys.global_channel if mode == "global" else keys.topic_channel(topic)
    encoded = Encoded.of(payload)
    env = Envelope(NODE, 0, topic, event, encoded)
    ts = int(time.time() * 1000)
    mac = (
        codec.sign(signing_key, NODE, topic, event, encoded.data, ts)
        if signing_key is not None
        else None
    )
    if store and (encoded.binary or not encoded.data.startswith(b"{")):
        raise ValueError("history stores JSON object payloads")
    probe: RedisConnection | None = None
    if client is None:
        client, probe = await _connect(redis_url)
    r, cluster = client, isinstance(client, RedisCluster)
    try:
        if not store:
            data = codec.encode(env, next(_SEQ), ts, mac)
            await r.execute_command("SPUBLISH" if cluster else "PUBLISH", channel, data)
            return None
        policy = history or HistoryPolicy()
        script = r.register_script(PUBLISH_STORED_SHARDED if cluster else PUBLISH_STORED)
        result = await script(
            keys=[keys.history_meta(topic), keys.history_stream(topic)],
            args=[
                os.urandom(6).hex(), channel, NODE, next(_SEQ), topic, event, encoded.data,
                "", ts, policy.max_len, policy.max_age_ms, mac or "", policy.max_bytes,
            ],
        )  # fmt: skip
        return int(result[0])
    finally:
        if probe is not None:
            if cluster:
                await r.aclose()
            await probe.close()


async def _publish_raw(
    redis_url: str, client: aioredis.Redis | RedisCluster | None, channel: str, data: bytes
) -> None:
    """A plain PUBLISH (on a cluster, Redis copies it to every node, as Phoenix needs)."""
    if client is not None:
        await client.execute_command("PUBLISH", channel, data)
        return
    probe = RedisConnection(redis_url, pool_size=1)
    try:
        await probe.redis.publish(channel, data)
    finally:
        await probe.close()


async def _connect(redis_url: str) -> tuple[aioredis.Redis | RedisCluster, RedisConnection]:
    """A client for ``redis_url`` (a ``RedisCluster`` when it names a cluster node) and
    the connection that found out, to close after it."""
    probe = RedisConnection(redis_url, pool_size=1)
    try:
        if not await is_cluster(probe):
            return probe.redis, probe
    except BaseException:
        await probe.close()
        raise
    return RedisCluster.from_url(redis_url), probe


def publish(redis_url: str, topic: str, event: str, payload: Any, **options: Any) -> int | None:
    """The blocking form of ``publish_async`` (for code without an event loop)."""
    return asyncio.run(publish_async(redis_url, topic, event, payload, **options))
