"""The ``roost`` command: serve, chat, token, inspect, cluster (benchmarks: ``roost-bench``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket as pysocket
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .cli_support import use_uvloop
from .config import ServeConfig, expand, options

log = logging.getLogger("roost.cli")


def default_node() -> str:
    return f"{pysocket.gethostname()}-{os.getpid()}"


@click.group()
@click.version_option(package_name="roost")
def main() -> None:
    """roost: a Phoenix-Channels-compatible real-time server and chat."""


F = TypeVar("F", bound=Callable[..., Any])


def config_options(only: set[str] | None = None) -> Callable[[F], F]:
    """Click options for ``ServeConfig``'s fields (or the ``only`` ones), in order."""

    def decorate(command: F) -> F:
        for name, default, o in reversed(options()):
            if only is not None and name not in only:
                continue
            kind: Any = None
            if o.choices:
                kind = click.Choice(o.choices)
            elif o.minimum is not None:
                ranged = click.IntRange if isinstance(default, int) else click.FloatRange
                kind = ranged(min=o.minimum)
            elif not o.is_flag and not o.multiple and default is not None:
                kind = type(default)
            command = click.option(
                o.flag,
                name,
                envvar=o.env,
                default=default,
                show_default=o.show_default,
                type=kind,
                multiple=o.multiple,
                is_flag=o.is_flag,
                help=o.help or None,
            )(command)
        return command

    return decorate


@main.command()
@config_options()
def serve(**given: Any) -> None:
    """Run a node: the chat page at / and the Phoenix socket at /socket."""

    from .chat import ChatSettings, create_endpoint
    from .pubsub import Broker
    from .security.origin import OriginPolicy
    from .server import build_app
    from .server.logs import setup_logging

    try:
        cfg = ServeConfig(**given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    node = cfg.node or default_node()
    setup_logging(node, cfg.log_format, cfg.log_level)
    uv = use_uvloop()
    broker: Broker
    if not cfg.redis_url:
        from .brokers.memory import MemoryBroker

        broker = MemoryBroker()
    else:
        from .brokers.redis import Keys, RedisBroker

        broker = RedisBroker(
            cfg.redis_url,
            mode=cfg.pubsub_mode,
            keys=Keys(cfg.redis_prefix, cfg.app_name),
            probe_interval=cfg.probe_interval,
            timeout=cfg.redis_timeout,
            wait_replicas=cfg.redis_wait_replicas,
            wait_timeout=cfg.redis_wait_timeout,
            signing_key=cfg.redis_signing_key.encode() or None,
            **cfg.redis_tls(),  # type: ignore[arg-type]
        )
    endpoint = create_endpoint(
        node,
        broker,
        echo=cfg.echo,
        limits=cfg.limits(),
        history=cfg.history(),
        presence_timeout=cfg.presence_timeout,
        presence_batch=cfg.presence_batch,
        settings=ChatSettings(
            secret=cfg.secret,
            require_token=cfg.require_token,
            rooms=frozenset(_split(cfg.rooms)) if cfg.rooms else None,
            private=tuple(_split(cfg.private_rooms)),
        ),
        origins=OriginPolicy(expand(cfg.allowed_origins)),
    )
    endpoint.proxies = cfg.proxies()
    if cfg.realtime:
        from .realtime import route

        route(endpoint.router)
    app = build_app(
        endpoint,
        api_key=cfg.api_key or None,
        drain_window=cfg.drain_window,
        longpoll_window=cfg.longpoll_window,
        # Long-poll tokens must verify on every node: a secret they all share.
        longpoll_key=(cfg.secret or cfg.redis_signing_key).encode() or None,
    )
    log.info(
        "roost starting node=%s url=http://%s:%d/ broker=%s uvloop=%s",
        node,
        cfg.host,
        cfg.port,
        f"redis/{cfg.pubsub_mode}" if cfg.redis_url else "memory",
        uv,
    )
    from .brokers.redis import ClusterRefused, DuplicateNodeError

    try:
        _run(app, cfg.host, cfg.port)
    except (DuplicateNodeError, ClusterRefused) as exc:
        log.error("%s", exc)
        click.echo(f"roost: {exc}", err=True)
        sys.exit(1)


def _split(text: str) -> list[str]:
    return expand((text,))


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


def _run(
    app: Any,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    sock: pysocket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: WebSocket upgrades on the lean path, the rest by aiohttp
    (server/front.py). ``reuse_port`` binds with SO_REUSEPORT; ``sock`` serves an inherited
    listening socket instead of binding."""
    from .server.run import run

    run(app, host, port, reuse_port=reuse_port, sock=sock)


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
@config_options(only={"redis_ca", "redis_cert", "redis_key"})
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
