"""The ``roost`` command: serve, chat, token, inspect, cluster (benchmarks: ``roost-bench``)."""

from __future__ import annotations

import asyncio
import dataclasses
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
@click.argument("app_spec", metavar="[MODULE:NAME]", required=False)
def serve(app_spec: str | None, **given: Any) -> None:
    """Run a node: the Phoenix socket at /socket, and the chat page at / — or your own
    application, MODULE:NAME (a roost.Application, see docs/APPLICATIONS.md)."""

    from . import assemble
    from .application import AppNotFound
    from .server.fdlimit import log_capacity
    from .server.logs import setup_logging
    from .workers import Role

    role = Role.from_env()  # set when a supervisor started this process
    if role is not None:
        given = role.config
    elif app_spec:
        given = {**given, "app": app_spec}
    try:
        cfg = ServeConfig(**given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if role is None and cfg.worker_count() > 1:
        from .workers.process import supervise

        node = cfg.node or default_node()
        setup_logging(node, cfg.log_format, cfg.log_level)
        sys.exit(supervise(cfg, node))
    node = role.name if role is not None else cfg.node or default_node()
    setup_logging(node, cfg.log_format, cfg.log_level)
    capacity = log_capacity(cfg.max_connections)
    if capacity < cfg.max_connections:
        # Past the file limit accept() fails and the connection is dropped unanswered;
        # below it the node refuses the excess with 503 (+ Retry-After), which clients
        # and load balancers understand.
        log.info("--max-connections lowered to %d: beyond it connections get 503", capacity)
        cfg = dataclasses.replace(cfg, max_connections=capacity)
    uv = use_uvloop()
    try:
        app = assemble.web_app(cfg, node, role)
    except AppNotFound as exc:
        raise click.UsageError(str(exc)) from None
    log.info(
        "roost starting node=%s app=%s url=http://%s:%d/ broker=%s uvloop=%s",
        node,
        cfg.app or "chat",
        cfg.host,
        cfg.port,
        (f"redis/{cfg.pubsub_mode}" if cfg.redis_wire == "roost" else "redis/phoenix")
        if cfg.redis_url
        else "memory",
        uv,
    )
    from .brokers.redis import ClusterRefused, DuplicateNodeError

    try:
        if role is None:
            _run(app, cfg.host, cfg.port)
        else:
            _run(app, cfg.host, role.port, reuse_port=role.fd is None, sock=role.listening_socket())
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
        from .terminal import run

        code = asyncio.run(run(url, room, user, send_text))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


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
@click.option(
    "--wire",
    "--redis-wire",
    "redis_wire",
    type=click.Choice(["roost", "phoenix"]),
    default="roost",
    show_default=True,
    help="phoenix: phoenix_pubsub_redis messages, printed as the article's redis_print.",
)
@config_options(only={"phoenix_pubsub", "phoenix_channel"})
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
    redis_wire: str,
    phoenix_pubsub: str,
    phoenix_channel: str,
) -> None:
    """Print every broadcast crossing Redis, decoded: time, node, seq, topic, event, payload.

    Listens to both pubsub modes at once (the global channel and every topic channel).
    With --redis-wire phoenix: every phoenix_pubsub_redis message on the Phoenix
    channel, as the article's redis_print shows it (IO.inspect), or --json.
    """
    from .brokers.redis import Keys
    from .brokers.redis.phoenix_codec import channel_for
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
        phoenix_channel=phoenix_channel or channel_for(phoenix_pubsub),
    )
    if redis_wire == "phoenix":
        from .inspect_phoenix import PhoenixInspector

        sys.exit(run(opts, PhoenixInspector))
    sys.exit(run(opts))


@main.command("publish")
@click.option("--redis", "redis_url", envvar="ROOST_REDIS_URL", default="redis://127.0.0.1:6379")
@click.option("--app", "app_name", envvar="ROOST_APP", default="chat", show_default=True)
@click.option("--prefix", "--redis-prefix", envvar="ROOST_REDIS_PREFIX", default="roost")
@click.option("--pubsub-mode", type=click.Choice(["topic", "global"]), default="topic")
@click.option("--store", is_flag=True, help="Keep it in the topic's history (roost wire).")
@click.option("--wire", type=click.Choice(["roost", "phoenix"]), default="roost")
@config_options(only={"phoenix_pubsub", "phoenix_channel"})
@click.option("--node", default=None, help="The origin node name (Phoenix wire).")
@click.option("--atom-keys", is_flag=True, help="Phoenix wire: the payload map's keys as atoms.")
@click.argument("topic")
@click.argument("event")
@click.argument("payload", default="{}")
def publish_command(
    redis_url: str, app_name: str, prefix: str, pubsub_mode: str, store: bool, wire: str,
    phoenix_pubsub: str, phoenix_channel: str, node: str | None, atom_keys: bool,
    topic: str, event: str, payload: str,
) -> None:  # fmt: skip
    """Broadcast PAYLOAD (JSON) as EVENT to every member of TOPIC, on every node — roost's
    or, with --wire phoenix, a Phoenix application's (roost.publish from the shell)."""
    import orjson

    from .publisher import publish

    try:
        value = orjson.loads(payload)
        offset = publish(
            redis_url, topic, event, value, app=app_name, prefix=prefix, mode=pubsub_mode,
            store=store, wire=wire, phoenix_pubsub=phoenix_pubsub,
            phoenix_channel=phoenix_channel or None, node=node, atom_keys=atom_keys,
        )  # fmt: skip
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if offset is not None:
        click.echo(offset)


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
