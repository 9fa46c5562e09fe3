"""Every option of ``roost serve``, once: name, default, environment variable, help,
validation. The CLI builds its options from these fields (``cli.config_options``),
``roost inspect`` takes its Redis TLS options from the same fields, and a test checks
that the README documents each one. Defaults come from where they are used
(``Limits``, ``HistoryPolicy``, ``build_app``, ``Presence``), never restated.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from .channels import Limits
from .channels.presence import Presence
from .hooks import HookPolicy
from .pubsub import HistoryPolicy
from .security.clientip import TrustedProxies
from .server import build_app


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str = ""
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    multiple: bool = False
    is_flag: bool = False
    show_default: bool = True


def opt(default: Any, flag: str, env: str, help: str = "", **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(flag, env, help, **kw)})


def _default(function: Any, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


L, H = Limits, HistoryPolicy
#: SO_REUSEPORT spreads connections over the sockets only on Linux (elsewhere the last
#: socket bound takes them all, or the option is missing): one shared socket there.
DEFAULT_WORKER_SOCKET = "reuseport" if sys.platform.startswith("linux") else "shared"


@dataclass(frozen=True)
class ServeConfig:
    app: str = opt(
        "",
        "--application",
        "ROOST_APPLICATION",
        "The application to serve, MODULE:NAME (a roost.Application, or a function returning "
        "one), also given as serve's argument [default: the chat].",
        show_default=False,
    )
    host: str = opt("127.0.0.1", "--host", "HOST", "Bind address.")
    port: int = opt(4000, "--port", "PORT", "TCP port.")
    node: str | None = opt(
        None, "--node", "NODE", "Unique node name [default: host-pid].", show_default=False
    )
    workers: str = opt(
        "1",
        "--workers",
        "ROOST_WORKERS",
        "Processes serving one port: N, or auto (one per core); each is a node named "
        "<node>-w<k>, so more than 1 needs --redis.",
    )
    worker_socket: str = opt(
        DEFAULT_WORKER_SOCKET,
        "--worker-socket",
        "ROOST_WORKER_SOCKET",
        "How workers share the port: reuseport (each binds it with SO_REUSEPORT, the kernel "
        "spreads connections; Linux) or shared (they accept on one inherited socket).",
        choices=("reuseport", "shared"),
    )
    log_format: str = opt("text", "--log-format", "ROOST_LOG_FORMAT", choices=("text", "json"))
    log_level: str = opt("info", "--log-level", "ROOST_LOG_LEVEL")
    max_frame: int = opt(
        L.max_frame,
        "--max-frame",
        "ROOST_MAX_FRAME",
        "Largest frame a client may send, in bytes (larger: close 1009).",
    )
    idle_timeout: float = opt(
        L.idle_timeout,
        "--idle-timeout",
        "ROOST_IDLE_TIMEOUT",
        "Close a socket that sent nothing (not even a heartbeat) for this many seconds.",
    )
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
        "Deadline of every Redis command (connect, pool wait, reply); a stored publish "
        "answers within twice this (keep it under phoenix.js's 10 s push timeout).",
        minimum=0.05,
    )
    redis_wait_replicas: int = opt(
        0,
        "--redis-wait-replicas",
        "ROOST_REDIS_WAIT_REPLICAS",
        "Acknowledge a stored message only once this many replicas have it (Redis WAIT); "
        "0: off. Fewer in time: the sender gets 'temporarily unavailable'.",
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
        5.0,
        "--probe-interval",
        "ROOST_PROBE_INTERVAL",
        "Seconds between liveness probes through Redis.",
    )
    secret: str = opt(
        "", "--secret", "ROOST_SECRET", "Signs and verifies tokens.", show_default=False
    )
    require_token: bool = opt(
        False,
        "--require-token",
        "ROOST_REQUIRE_TOKEN",
        "Refuse sockets without a valid token (HTTP 403).",
        is_flag=True,
    )
    rooms: str = opt(
        "",
        "--rooms",
        "ROOST_ROOMS",
        "Comma list of the only rooms that may be joined (default: any).",
        show_default=False,
    )
    private_rooms: str = opt(
        "",
        "--private-rooms",
        "ROOST_PRIVATE_ROOMS",
        "Comma list of room name patterns only users whose token lists them may join.",
        show_default=False,
    )
    allowed_origins: tuple[str, ...] = opt(
        (),
        "--allowed-origin",
        "ROOST_ALLOWED_ORIGINS",
        "Extra allowed Origin (scheme://host[:port], *.example.com, or * for any); "
        "repeatable. The request's own host is always allowed.",
        multiple=True,
        show_default=False,
    )
    max_channels: int = opt(
        L.max_channels, "--max-channels", "ROOST_MAX_CHANNELS", "Channels one socket may join."
    )
    max_buffer: int = opt(
        L.max_buffer,
        "--max-buffer",
        "ROOST_MAX_BUFFER",
        "Unsent bytes to one client before it is disconnected (1013).",
    )
    msg_rate: float = opt(
        L.msg_rate, "--msg-rate", "ROOST_MSG_RATE", "Pushes per second per socket (0: unlimited)."
    )
    msg_burst: float = opt(L.msg_burst, "--msg-burst", "ROOST_MSG_BURST", "Pushes saved up.")
    join_rate: float = opt(
        L.join_rate, "--join-rate", "ROOST_JOIN_RATE", "Joins per second per socket (0: unlimited)."
    )
    join_burst: float = opt(L.join_burst, "--join-burst", "ROOST_JOIN_BURST", "Joins saved up.")
    max_connections: int = opt(
        L.max_connections,
        "--max-connections",
        "ROOST_MAX_CONNECTIONS",
        "Sockets per node; beyond: HTTP 503.",
    )
    max_connections_per_ip: int = opt(
        L.max_connections_per_ip,
        "--max-connections-per-ip",
        "ROOST_MAX_CONNECTIONS_PER_IP",
        "Open sockets and long-poll sessions per client address (IPv6: per /64) on this "
        "node, so that one client cannot fill --max-connections; beyond: HTTP 429 (0: no cap).",
    )
    conn_rate: float = opt(
        L.conn_rate,
        "--conn-rate",
        "ROOST_CONN_RATE",
        "New sockets and long-poll sessions per second per client address "
        "(0: unlimited); beyond: HTTP 429 with Retry-After.",
    )
    conn_burst: float = opt(
        L.conn_burst, "--conn-burst", "ROOST_CONN_BURST", "New connections saved up per address."
    )
    trusted_proxies: tuple[str, ...] = opt(
        (),
        "--trusted-proxy",
        "ROOST_TRUSTED_PROXIES",
        "Address or CIDR of a proxy in front of roost (repeatable, or a comma list). "
        "Only from these peers is X-Forwarded-For read: the client is its right-most "
        "address that is not a trusted proxy. Default: none (the peer is the client).",
        multiple=True,
        show_default=False,
    )
    api_key: str = opt(
        "",
        "--api-key",
        "ROOST_API_KEY",
        "Enables POST /api/broadcast for callers with this bearer key.",
        show_default=False,
    )
    longpoll_window: float = opt(
        _default(build_app, "longpoll_window"),
        "--longpoll-window",
        "ROOST_LONGPOLL_WINDOW",
        "Seconds a long-poll GET waits for messages.",
    )
    drain_window: float = opt(
        _default(build_app, "drain_window"),
        "--drain-window",
        "ROOST_DRAIN_WINDOW",
        "On SIGTERM, seconds over which sockets are closed (1012).",
    )
    history_size: int = opt(
        H.max_len,
        "--history-size",
        "ROOST_HISTORY_SIZE",
        "Messages kept per room for late joiners and recovery.",
    )
    history_ttl: float = opt(
        H.max_age, "--history-ttl", "ROOST_HISTORY_TTL", "Seconds a message stays in history."
    )
    history_bytes: int = opt(
        H.max_bytes,
        "--history-bytes",
        "ROOST_HISTORY_BYTES",
        "Bytes of history kept per room (oldest messages dropped first).",
        minimum=1,
    )
    history_rooms: int = opt(
        H.max_rooms,
        "--history-rooms",
        "ROOST_HISTORY_ROOMS",
        "Rooms with history per node (memory broker; an idle room is evicted first).",
        minimum=1,
    )
    presence_batch: float = opt(
        _default(Presence.__init__, "batch"),
        "--presence-batch",
        "ROOST_PRESENCE_BATCH",
        "Seconds over which a room's presence changes are merged into one diff (0: none).",
    )
    presence_timeout: float = opt(
        30.0,
        "--presence-timeout",
        "ROOST_PRESENCE_TIMEOUT",
        "Seconds after which the users of a node that died are shown as gone.",
    )
    hook_connect: str = opt(
        "",
        "--hook-connect",
        "ROOST_HOOK_CONNECT",
        "URL your backend answers: may this socket connect, with which assigns.",
        show_default=False,
    )
    hook_join: str = opt(
        "",
        "--hook-join",
        "ROOST_HOOK_JOIN",
        "URL your backend answers: may this user join this topic (payload/assigns rewrite).",
        show_default=False,
    )
    hook_publish: str = opt(
        "",
        "--hook-publish",
        "ROOST_HOOK_PUBLISH",
        "URL your backend answers: may this client push this event (payload rewrite).",
        show_default=False,
    )
    hook_secret: str = opt(
        "",
        "--hook-secret",
        "ROOST_HOOK_SECRET",
        "Signs every hook request (X-Roost-Signature); required with any hook.",
        show_default=False,
    )
    hook_timeout: float = opt(
        _default(HookPolicy, "timeout"),
        "--hook-timeout",
        "ROOST_HOOK_TIMEOUT",
        "Seconds a hook request may take (per attempt).",
    )
    hook_retries: int = opt(
        _default(HookPolicy, "retries"),
        "--hook-retries",
        "ROOST_HOOK_RETRIES",
        "Retries of a hook request that failed (timeout, connection, 5xx).",
        minimum=0,
    )
    hook_failure: str = opt(
        "closed",
        "--hook-failure",
        "ROOST_HOOK_FAILURE",
        "When the backend gives no answer: closed (deny: temporarily unavailable) or open (allow).",
        choices=("closed", "open"),
    )
    echo: bool = opt(
        False, "--echo", "ROOST_ECHO", "Also serve the diagnostic echo:* channel.", is_flag=True
    )
    realtime: bool = opt(
        False,
        "--realtime",
        "ROOST_REALTIME",
        "Also serve Supabase Realtime clients: realtime:* channels (Broadcast, Presence).",
        is_flag=True,
    )

    def __post_init__(self) -> None:
        if self.require_token and not self.secret:
            raise ValueError("--require-token needs a secret (--secret or ROOST_SECRET)")
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
        count = self.worker_count()  # "two" or 0 is a usage error
        if count > 1 and not self.redis_url:
            raise ValueError(
                f"--workers {self.workers} needs --redis URL: each worker is a node of its "
                "own, and nodes of the memory broker cannot reach each other's sockets "
                "(a room would be split between workers)"
            )
        if (self.hook_connect or self.hook_join or self.hook_publish) and not self.hook_secret:
            raise ValueError(
                "backend hooks need --hook-secret (ROOST_HOOK_SECRET): every hook request is "
                "signed with it so that your backend can trust it"
            )
        self.proxies()  # a bad CIDR is a usage error, not a crash at the first request

    def worker_count(self) -> int:
        """``--workers`` as a number: ``auto`` is the cores this process may use."""
        if self.workers == "auto":
            return usable_cores()
        try:
            count = int(self.workers)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"--workers must be a number >= 1 or auto, not {self.workers!r}")
        return count

    def limits(self) -> Limits:
        return Limits(
            max_frame=self.max_frame,
            idle_timeout=self.idle_timeout,
            max_channels=self.max_channels,
            max_buffer=self.max_buffer,
            msg_rate=self.msg_rate,
            msg_burst=self.msg_burst,
            join_rate=self.join_rate,
            join_burst=self.join_burst,
            max_connections=self.max_connections,
            max_connections_per_ip=self.max_connections_per_ip,
            conn_rate=self.conn_rate,
            conn_burst=self.conn_burst,
        )

    def proxies(self) -> TrustedProxies:
        return TrustedProxies(expand(self.trusted_proxies))

    def history(self) -> HistoryPolicy:
        return HistoryPolicy(
            max_len=self.history_size,
            max_age=self.history_ttl,
            max_bytes=self.history_bytes,
            max_rooms=self.history_rooms,
        )

    def redis_tls(self) -> dict[str, str]:
        """redis-py's TLS keyword arguments for the files given."""
        pairs = (
            ("ssl_ca_certs", self.redis_ca),
            ("ssl_certfile", self.redis_cert),
            ("ssl_keyfile", self.redis_key),
        )
        return {name: value for name, value in pairs if value}


def usable_cores(cgroup: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may run on (its CPU affinity), fewer under a cgroup v2 CPU
    quota (a container's ``cpus`` / a pod's CPU limit): ``ceil(quota / period)``."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        with open(cgroup) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cores)


def expand(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma lists (the env var form) alike."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def options() -> list[tuple[str, Any, Option]]:
    """(field name, default, Option) for every option, in declaration order."""
    return [(f.name, f.default, f.metadata["option"]) for f in fields(ServeConfig)]
