"""How a node reaches Redis: URL, routing mode, wire (roost's or Phoenix's), names, TLS,
signing, deadlines, replication."""

from __future__ import annotations

from dataclasses import dataclass

from ..brokers.redis.keys import Keys
from .option import opt


@dataclass(frozen=True)
class RedisOptions:
    redis_url: str | None = opt(
        None,
        "--redis",
        "ROOST_REDIS_URL",
        "Redis URL (redis://, rediss://, unix://; user:password@, /db; or "
        "redis+sentinel://host:26379,host:26380/<master>[/db]) to scale out; "
        "without it the embedded memory broker serves one node.",
        show_default=False,
    )
    pubsub_mode: str = opt(
        "topic",
        "--pubsub-mode",
        "ROOST_PUBSUB_MODE",
        "topic: one Redis channel per topic, a node gets only rooms it has members in; "
        "global: one channel for everything (as phoenix_pubsub_redis).",
        choices=("topic", "global"),
    )
    redis_wire: str = opt(
        "roost",
        "--redis-wire",
        "ROOST_REDIS_WIRE",
        "roost: roost's own envelopes; phoenix: phoenix_pubsub_redis 3.x messages on "
        "phx:Elixir.<--phoenix-pubsub>.Adapter, shared with Phoenix nodes, one channel for "
        "every topic (--pubsub-mode does not apply; README: 'Running beside Phoenix').",
        choices=("roost", "phoenix"),
    )
    phoenix_pubsub: str = opt(
        "Chat.PubSub",
        "--phoenix-pubsub",
        "ROOST_PHOENIX_PUBSUB",
        "The Phoenix application's PubSub name (with --redis-wire phoenix).",
    )
    phoenix_channel: str = opt(
        "",
        "--phoenix-channel",
        "ROOST_PHOENIX_CHANNEL",
        "The Redis channel itself, instead of the one --phoenix-pubsub names.",
        show_default=False,
    )
    phoenix_compression: int = opt(
        0,
        "--phoenix-compression",
        "ROOST_PHOENIX_COMPRESSION",
        "zlib level of the terms roost publishes, 0-9 (phoenix_pubsub_redis's "
        ":compression_level; compressed terms are always read).",
        minimum=0,
    )
    app_name: str = opt(
        "chat", "--app", "ROOST_APP", "Application name in Redis channel names (<prefix>:<app>)."
    )
    redis_prefix: str = opt("roost", "--redis-prefix", "ROOST_REDIS_PREFIX")
    redis_ca: str | None = opt(
        None,
        "--redis-ca",
        "ROOST_REDIS_CA",
        "CA certificate file to verify a rediss:// server.",
        show_default=False,
    )
    redis_cert: str | None = opt(
        None,
        "--redis-cert",
        "ROOST_REDIS_CERT",
        "Client certificate file for rediss:// (mutual TLS).",
        show_default=False,
    )
    redis_key: str | None = opt(
        None,
        "--redis-key",
        "ROOST_REDIS_KEY",
        "Client private key file for rediss://.",
        show_default=False,
    )
    redis_signing_key: str = opt(
        "",
        "--redis-signing-key",
        "ROOST_REDIS_SIGNING_KEY",
        "HMAC-sign every envelope; envelopes that fail the check are dropped.",
        show_default=False,
    )
    redis_timeout: float = opt(
        3.0,
        "--redis-timeout",
        "ROOST_REDIS_TIMEOUT",
        "Deadline of every Redis command (connect, pool wait, reply); a client's push is "
        "answered within --push-deadline whatever this is.",
        minimum=0.05,
    )
    redis_wait_replicas: int = opt(
        0,
        "--redis-wait-replicas",
        "ROOST_REDIS_WAIT_REPLICAS",
        "Acknowledge a stored message only once this many replicas have it (Redis WAIT); "
        "0: off. Fewer in time: the sender gets 'timeout' (sent and stored, not known durable).",
        minimum=0,
    )
    redis_wait_timeout: float = opt(
        0.2,
        "--redis-wait-timeout",
        "ROOST_REDIS_WAIT_TIMEOUT",
        "Seconds a stored publish waits for its replicas (with --redis-wait-replicas).",
        minimum=0.001,
    )
    probe_interval: float = opt(
        1.0,
        "--probe-interval",
        "ROOST_PROBE_INTERVAL",
        "Seconds between liveness probes through Redis (a message to itself on the "
        "subscriber connection); none back within three of them: the subscription is "
        "restarted (keep three under --push-deadline: a silent path is found in time).",
    )

    def check_redis(self) -> None:
        Keys(self.redis_prefix, self.app_name)  # no brace: it would move the hash tags
        if self.redis_wait_replicas and self.redis_wait_timeout >= self.redis_timeout:
            raise ValueError("--redis-wait-timeout must be below --redis-timeout")
        if self.redis_wire == "phoenix":
            if not self.redis_url:
                raise ValueError("--redis-wire phoenix needs --redis URL")
            if self.redis_signing_key:
                raise ValueError(
                    "--redis-wire phoenix carries no signature (Phoenix has none): "
                    "drop --redis-signing-key"
                )
            if self.phoenix_compression > 9:
                raise ValueError("--phoenix-compression must be 0..9")

    def redis_tls(self) -> dict[str, str]:
        """redis-py's TLS keyword arguments for the files given."""
        pairs = (
            ("ssl_ca_certs", self.redis_ca),
            ("ssl_certfile", self.redis_cert),
            ("ssl_keyfile", self.redis_key),
        )
        return {name: value for name, value in pairs if value}
