"""The ``roost`` command: serve, chat, token, inspect, cluster (benchmarks: ``roost-bench``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket as pysocket
import sys
from typing import Any

import click

from .channels import Limits
from .cli_support import use_uvloop

log = logging.getLogger("roost.cli")


def default_node() -> str:
    return f"{pysocket.gethostname()}-{os.getpid()}"


@click.group()
@click.version_option(package_name="roost")
def main() -> None:
    """roost: a Phoenix-Channels-compatible real-time server and chat."""


@main.command()
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", envvar="PORT", default=4000, show_default=True, type=int)
@click.option("--node", envvar="NODE", default=None, help="Unique node name [default: host-pid].")
@click.option(
    "--log-format",
    envvar="ROOST_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option("--log-level", envvar="ROOST_LOG_LEVEL", default="info", show_default=True)
@click.option(
    "--max-frame",
    envvar="ROOST_MAX_FRAME",
    default=64 * 1024,
    show_default=True,
    type=int,
    help="Largest frame a client may send, in bytes (larger: close 1009).",
)
@click.option(
    "--idle-timeout",
    envvar="ROOST_IDLE_TIMEOUT",
    default=60.0,
    show_default=True,
    type=float,
    help="Close a socket that sent nothing (not even a heartbeat) for this many seconds.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="ROOST_REDIS_URL",
    default=None,
    help="Redis URL (redis://, rediss://, unix://; user:password@, /db) to scale out; "
    "without it the embedded memory broker serves one node.",
)
@click.option(
    "--pubsub-mode",
    envvar="ROOST_PUBSUB_MODE",
    type=click.Choice(["topic", "global"]),
    default="topic",
    show_default=True,
    help="topic: one Redis channel per topic, a node gets only rooms it has members in; "
    "global: one channel for everything (as phoenix_pubsub_redis).",
)
@click.option(
    "--app",
    "app_name",
    envvar="ROOST_APP",
    default="chat",
    show_default=True,
    help="Application name in Redis channel names (<prefix>:<app>).",
)
@click.option("--redis-prefix", envvar="ROOST_REDIS_PREFIX", default="roost", show_default=True)
@click.option(
    "--redis-ca",
    envvar="ROOST_REDIS_CA",
    default=None,
    help="CA certificate file to verify a rediss:// server.",
)
@click.option(
    "--redis-cert",
    envvar="ROOST_REDIS_CERT",
    default=None,
    help="Client certificate file for rediss:// (mutual TLS).",
)
@click.option(
    "--redis-key",
    envvar="ROOST_REDIS_KEY",
    default=None,
    help="Client private key file for rediss://.",
)
@click.option(
    "--redis-signing-key",
    envvar="ROOST_REDIS_SIGNING_KEY",
    default="",
    help="HMAC-sign every envelope; envelopes that fail the check are dropped.",
)
@click.option(
    "--max-channels",
    envvar="ROOST_MAX_CHANNELS",
    default=100,
    show_default=True,
    help="Channels one socket may join.",
)
@click.option(
    "--max-buffer",
    envvar="ROOST_MAX_BUFFER",
    default=1024 * 1024,
    show_default=True,
    help="Unsent bytes to one client before it is disconnected (1013).",
)
@click.option(
    "--msg-rate",
    envvar="ROOST_MSG_RATE",
    default=50.0,
    show_default=True,
    help="Pushes per second per socket (0: unlimited).",
)
@click.option("--msg-burst", envvar="ROOST_MSG_BURST", default=100.0, show_default=True)
@click.option(
    "--join-rate",
    envvar="ROOST_JOIN_RATE",
    default=10.0,
    show_default=True,
    help="Joins per second per socket (0: unlimited).",
)
@click.option("--join-burst", envvar="ROOST_JOIN_BURST", default=100.0, show_default=True)
@click.option(
    "--max-connections",
    envvar="ROOST_MAX_CONNECTIONS",
    default=25_000,
    show_default=True,
    help="Sockets per node; beyond: HTTP 503.",
)
@click.option("--secret", envvar="ROOST_SECRET", default="", help="Signs and verifies tokens.")
@click.option(
    "--require-token",
    is_flag=True,
    envvar="ROOST_REQUIRE_TOKEN",
    help="Refuse sockets without a valid token (HTTP 403).",
)
@click.option(
    "--rooms",
    envvar="ROOST_ROOMS",
    default="",
    help="Comma list of the only rooms that may be joined (default: any).",
)
@click.option(
    "--private-rooms",
    envvar="ROOST_PRIVATE_ROOMS",
    default="",
    help="Comma list of room name patterns only users whose token lists them may join.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    envvar="ROOST_ALLOWED_ORIGINS",
    help="Extra allowed Origin (scheme://host[:port], *.example.com, or * for any); "
    "repeatable. The request's own host is always allowed.",
)
@click.option(
    "--api-key",
    envvar="ROOST_API_KEY",
    default="",
    help="Enables POST /api/broadcast for callers with this bearer key.",
)
@click.option(
    "--longpoll-window",
    envvar="ROOST_LONGPOLL_WINDOW",
    default=10.0,
    show_default=True,
    help="Seconds a long-poll GET waits for messages.",
)
@click.option(
    "--drain-window",
    envvar="ROOST_DRAIN_WINDOW",
    default=5.0,
    show_default=True,
    help="On SIGTERM, seconds over which sockets are closed (1012).",
)
@click.option(
    "--history-size",
    envvar="ROOST_HISTORY_SIZE",
    default=100,
    show_default=True,
    help="Messages kept per room for late joiners and recovery.",
)
@click.option(
    "--history-ttl",
    envvar="ROOST_HISTORY_TTL",
    default=86400.0,
    show_default=True,
    help="Seconds a message stays in history.",
)
@click.option(
    "--presence-batch",
    envvar="ROOST_PRESENCE_BATCH",
    default=0.05,
    show_default=True,
    help="Seconds over which a room's presence changes are merged into one diff (0: none).",
)
@click.option(
    "--presence-timeout",
    envvar="ROOST_PRESENCE_TIMEOUT",
    default=30.0,
    show_default=True,
    help="Seconds after which the users of a node that died are shown as gone.",
)
@click.option(
    "--probe-interval",
    envvar="ROOST_PROBE_INTERVAL",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between liveness probes through Redis.",
)
@click.option(
    "--redis-timeout",
    envvar="ROOST_REDIS_TIMEOUT",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Deadline of every Redis command (connect, pool wait, reply); a stored "
    "publish answers within twice this (keep it under phoenix.js's 10 s push timeout).",
)
@click.option(
    "--echo",
    is_flag=True,
    envvar="ROOST_ECHO",
    help="Also serve the diagnostic echo:* channel.",
)
def serve(
    host: str,
    port: int,
    node: str | None,
    log_format: str,
    log_level: str,
    max_frame: int,
    idle_timeout: float,
    redis_url: str | None,
    pubsub_mode: str,
    app_name: str,
    redis_prefix: str,
    redis_ca: str | None,
    redis_cert: str | None,
    redis_key: str | None,
    redis_signing_key: str,
    probe_interval: float,
    redis_timeout: float,
    secret: str,
    require_token: bool,
    rooms: str,
    private_rooms: str,
    allowed_origins: tuple[str, ...],
    max_channels: int,
    max_buffer: int,
    msg_rate: float,
    msg_burst: float,
    join_rate: float,
    join_burst: float,
    max_connections: int,
    api_key: str,
    longpoll_window: float,
    drain_window: float,
    history_size: int,
    history_ttl: float,
    presence_timeout: float,
    presence_batch: float,
    echo: bool,
) -> None:
    """Run a node: the chat page at / and the Phoenix socket at /socket."""

    from .chat import ChatSettings, create_endpoint
    from .pubsub import Broker, HistoryPolicy
    from .security.origin import OriginPolicy
    from .server import build_app
    from .server.logs import setup_logging

    node = node or default_node()
    setup_logging(node, log_format, log_level)
    if require_token and not secret:
        raise click.UsageError("--require-token needs a secret (--secret or ROOST_SECRET)")
    uv = use_uvloop()
    limits = Limits(
        max_frame=max_frame,
        idle_timeout=idle_timeout,
        max_channels=max_channels,
        max_buffer=max_buffer,
        msg_rate=msg_rate,
        msg_burst=msg_burst,
        join_rate=join_rate,
        join_burst=join_burst,
        max_connections=max_connections,
    )
    broker: Broker
    if not redis_url:
        from .brokers.memory import MemoryBroker

        broker = MemoryBroker()
    else:
        from .brokers.redis import Keys, RedisBroker

        tls: dict[str, Any] = {
            name: value
            for name, value in (
                ("ssl_ca_certs", redis_ca),
                ("ssl_certfile", redis_cert),
                ("ssl_keyfile", redis_key),
            )
            if value
        }
        broker = RedisBroker(
            redis_url,
            mode=pubsub_mode,
            keys=Keys(redis_prefix, app_name),
            probe_interval=probe_interval,
            timeout=redis_timeout,
            signing_key=redis_signing_key.encode() or None,
            **tls,
        )
    endpoint = create_endpoint(
        node,
        broker,
        echo=echo,
        limits=limits,
        history=HistoryPolicy(max_len=history_size, max_age=history_ttl),
        presence_timeout=presence_timeout,
        presence_batch=presence_batch,
        settings=ChatSettings(
            secret=secret,
            require_token=require_token,
            rooms=frozenset(_split(rooms)) if rooms else None,
            private=tuple(_split(private_rooms)),
        ),
        origins=OriginPolicy(_expand(allowed_origins)),
    )
    app = build_app(
        endpoint,
        api_key=api_key or None,
        drain_window=drain_window,
        longpoll_window=longpoll_window,
    )
    log.info(
        "roost starting node=%s url=http://%s:%d/ broker=%s uvloop=%s",
        node,
        host,
        port,
        f"redis/{pubsub_mode}" if redis_url else "memory",
        uv,
    )
    from .brokers.redis import DuplicateNodeError

    try:
        _run(app, host, port)
    except DuplicateNodeError as exc:
        log.error("%s", exc)
        click.echo(f"roost: {exc}", err=True)
        sys.exit(1)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _expand(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma lists (the env var form) alike."""
    return [item for value in values for item in _split(value)]


@main.command()
@click.option("--user", required=True, help="The name the token binds (1-32 characters).")
@click.option("--ttl", default=3600.0, show_default=True, help="Seconds until it expires.")
@click.option("--rooms", default="", help="Comma list of private rooms this user may join.")
@click.option("--secret", envvar="ROOST_SECRET", default="", help="[default: $ROOST_SECRET]")
def token(user: str, ttl: float, rooms: str, secret: str) -> None:
    """Mint a signed connection token (pass it as the `token` connect param)."""
    from .security import tokens

    if not secret:
        raise click.UsageError("set ROOST_SECRET (or --secret) to the server's secret")
    try:
        click.echo(tokens.mint(secret, user, ttl, _split(rooms)))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _run(app: Any, host: str, port: int) -> None:
    from aiohttp import web

    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=3.0,
    )


@main.command()
@click.option("--url", default="ws://127.0.0.1:4000/socket", show_default=True)
@click.option("--room", default="lobby", show_default=True)
@click.option("--user", default=None, help="Your name [default: anonymous].")
@click.option(
    "--send", "send_text", default=None, help="Send one message, wait for its reply, exit."
)
def chat(url: str, room: str, user: str | None, send_text: str | None) -> None:
    """A terminal chat: lines you type are sent; messages print as [user] body."""
    try:
        code = asyncio.run(_chat(url, room, user, send_text))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


async def _chat(url: str, room: str, user: str | None, send_text: str | None) -> int:
    from .client import Client, JoinRefused

    params = {"user": user} if user else {}
    client = Client(url, params)
    try:
        await client.connect()
    except Exception as exc:
        click.echo(f"cannot connect to {url}: {exc}", err=True)
        return 1
    channel = client.channel(f"rooms:{room}", {"user": user} if user else {})

    def show(payload: Any) -> None:
        click.echo(f"[{payload.get('user') or 'anonymous'}] {payload.get('body')}")

    def entered(payload: Any) -> None:
        click.echo(f"* {payload.get('user')} entered")

    try:
        if send_text is None:
            channel.on("new:msg", show)
            channel.on("user:entered", entered)
        try:
            joined = await channel.join()
        except JoinRefused as exc:
            click.echo(f"join refused: {exc.response}", err=True)
            return 1
        if send_text is not None:
            reply = await channel.push("new:msg", {"body": send_text})
            if not reply.ok:
                click.echo(f"error: {reply.response}", err=True)
                return 1
            return 0
        click.echo(f"joined rooms:{room} on node {joined.get('node')}; type and press Enter.")
        await _pump_stdin(channel)
        return 0
    finally:
        await client.close()


async def _pump_stdin(channel: Any) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):  # stdin is not a pipe/tty (e.g. a file): read it in a thread
        for line in await asyncio.to_thread(sys.stdin.readlines):
            await _send_line(channel, line)
        return
    while line_bytes := await reader.readline():
        await _send_line(channel, line_bytes.decode(errors="replace"))


async def _send_line(channel: Any, line: str) -> None:
    text = line.strip()
    if not text:
        return
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        reply = await channel.push("new:msg", {"body": text})
        if not reply.ok:
            click.echo(f"error: {reply.response.get('reason')}", err=True)


@main.command("inspect")
@click.option(
    "--redis",
    "redis_url",
    envvar="ROOST_REDIS_URL",
    default="redis://127.0.0.1:6379",
    show_default=True,
    help="Redis URL the nodes use.",
)
@click.option("--app", "app_name", envvar="ROOST_APP", default="chat", show_default=True)
@click.option(
    "--prefix", "--redis-prefix", envvar="ROOST_REDIS_PREFIX", default="roost", show_default=True
)
@click.option("--topic", default=None, help="Only topics matching this pattern (e.g. 'rooms:*').")
@click.option("--event", default=None, help="Only events matching this pattern (e.g. 'new:*').")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for machines.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N broadcasts.")
@click.option(
    "--max-payload",
    type=click.IntRange(min=0),
    default=400,
    show_default=True,
    help="Cut longer payloads in the human format (0: never).",
)
@click.option("--redis-ca", envvar="ROOST_REDIS_CA", default=None, help="CA file for rediss://.")
@click.option("--redis-cert", envvar="ROOST_REDIS_CERT", default=None, help="Client cert file.")
@click.option("--redis-key", envvar="ROOST_REDIS_KEY", default=None, help="Client key file.")
@click.option(
    "--redis-signing-key",
    envvar="ROOST_REDIS_SIGNING_KEY",
    default="",
    help="Verify envelope HMACs; failures are flagged on their line.",
)
def inspect_command(
    redis_url: str,
    app_name: str,
    prefix: str,
    topic: str | None,
    event: str | None,
    as_json: bool,
    count: int | None,
    max_payload: int,
    redis_ca: str | None,
    redis_cert: str | None,
    redis_key: str | None,
    redis_signing_key: str,
) -> None:
    """Print every broadcast crossing Redis, decoded: time, node, seq, topic, event, payload.

    Listens to both pubsub modes at once (the global channel and every topic channel).
    """
    from .brokers.redis import Keys
    from .inspector import Options, run

    tls = {"ssl_ca_certs": redis_ca, "ssl_certfile": redis_cert, "ssl_keyfile": redis_key}
    opts = Options(
        redis_url,
        Keys(prefix, app_name),
        topic,
        event,
        as_json,
        count,
        max_payload,
        signing_key=redis_signing_key.encode() or None,
        connection={k: v for k, v in tls.items() if v},
    )
    sys.exit(run(opts))


@main.command("cluster")
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--redis", "redis_url", default=None, help="Use this Redis [default: a private one].")
@click.option("--base-port", type=int, default=4000, show_default=True, help="Port of n1.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address of the nodes.")
@click.option(
    "--pubsub-mode", type=click.Choice(["topic", "global"]), default="topic", show_default=True
)
@click.argument("serve_args", nargs=-1, type=click.UNPROCESSED)
def cluster_command(
    nodes: int,
    redis_url: str | None,
    base_port: int,
    host: str,
    pubsub_mode: str,
    serve_args: tuple[str, ...],
) -> None:
    """Start N nodes n1..nN on consecutive ports, sharing one Redis; Ctrl-C stops all.

    Without --redis a private redis-server (no persistence) is started on a free port.
    Arguments after -- go to every `roost serve` (e.g. -- --echo).
    """
    from .cluster import Cluster

    cluster = Cluster(nodes, redis_url, base_port, host, pubsub_mode, serve_args)
    sys.exit(cluster.run())
