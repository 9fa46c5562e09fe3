"""What ``roost serve`` builds from its options: the broker, the application's
endpoint, the aiohttp app. (The CLI parses, logs and runs; this module only builds.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .application import Application, load
from .config import ServeConfig, expand

if TYPE_CHECKING:
    from aiohttp import web

    from .channels import Endpoint
    from .pubsub import Broker
    from .workers import Role


def broker(cfg: ServeConfig, role: Role | None = None) -> Broker:
    """The memory broker without ``--redis``; else Redis (single, Sentinel or Cluster)."""
    if not cfg.redis_url:
        from .brokers.memory import MemoryBroker

        return MemoryBroker()
    from .brokers.redis import Keys, RedisBroker

    kind: type[RedisBroker] = RedisBroker
    wire: dict[str, Any] = {"mode": cfg.pubsub_mode}
    if cfg.redis_wire == "phoenix":
        from .brokers.redis.phoenix import PhoenixWireBroker

        kind = PhoenixWireBroker
        wire = {
            "pubsub": cfg.phoenix_pubsub,
            "channel": cfg.phoenix_channel or None,
            "compression": cfg.phoenix_compression,
        }
    made: RedisBroker = kind(
        cfg.redis_url,
        **wire,
        keys=Keys(cfg.redis_prefix, cfg.app_name),
        probe_interval=cfg.probe_interval,
        timeout=cfg.redis_timeout,
        wait_replicas=cfg.redis_wait_replicas,
        wait_timeout=cfg.redis_wait_timeout,
        signing_key=cfg.redis_signing_key.encode() or None,
        instance=role.instance if role is not None else None,
        takeover=role.takeover if role is not None else None,
        **cfg.redis_tls(),  # type: ignore[arg-type]
    )
    return made


def application(cfg: ServeConfig) -> Application:
    """``--app MODULE:NAME``, or the chat with its options."""
    if cfg.app:
        return load(cfg.app)
    from .chat import ChatSettings
    from .chat import application as chat

    return chat(
        ChatSettings(
            secret=cfg.secret,
            require_token=cfg.require_token,
            rooms=frozenset(_split(cfg.rooms)) if cfg.rooms else None,
            private=tuple(_split(cfg.private_rooms)),
        ),
        echo=cfg.echo,
    )


def web_app(cfg: ServeConfig, node: str, role: Role | None = None) -> web.Application:
    """The node: the application's endpoint on its broker, served by the aiohttp app."""
    from .security.origin import OriginPolicy
    from .server import build_app

    app = application(cfg)
    endpoint = app.endpoint(
        node,
        broker(cfg, role),
        limits=cfg.limits(),
        history=cfg.history(),
        presence_timeout=cfg.presence_timeout,
        presence_batch=cfg.presence_batch,
        origins=OriginPolicy(expand(cfg.allowed_origins)),
    )
    endpoint.proxies = cfg.proxies()
    hooks = _hooks(cfg, endpoint)
    if cfg.realtime:
        from .realtime import route

        route(endpoint.router)
    admin_start, admin_stop = _admin(cfg, endpoint, role)
    extra: dict[str, Any] = {}
    if cfg.app:  # the application's own page, if it has one; the chat's otherwise
        extra = {"static": app.static, "pages": ("/",)}
    return build_app(
        endpoint,
        api_key=cfg.api_key or None,
        drain_window=cfg.drain_window,
        longpoll_window=cfg.longpoll_window,
        # Long-poll tokens must verify on every node: a secret they all share.
        longpoll_key=(cfg.secret or cfg.redis_signing_key).encode() or None,
        siblings=role.siblings() if role is not None else None,
        balance=cfg.balance(),
        on_start=[*app.started, *admin_start],
        on_stop=[*admin_stop, *app.stopping, *hooks],
        admin=bool(admin_start),
        **extra,
    )


def _hooks(cfg: ServeConfig, endpoint: Endpoint) -> list[Callable[[Endpoint], Awaitable[None]]]:
    """``--hook-*``: the backend decides connects, joins, pushes; its client's closer."""
    if not (cfg.hook_connect or cfg.hook_join or cfg.hook_publish):
        return []
    from .hooks import HookClient, HookPolicy, HttpGuard, connect_hook

    policy = HookPolicy(cfg.hook_timeout, cfg.hook_retries, cfg.hook_failure == "open")
    client = HookClient(cfg.hook_secret.encode(), endpoint.node, policy)
    if cfg.hook_connect:
        endpoint.connect = connect_hook(client, cfg.hook_connect, endpoint.connect)
    if cfg.hook_join or cfg.hook_publish:
        endpoint.guard = HttpGuard(client, cfg.hook_join, cfg.hook_publish)
    endpoint.settings["hooks"] = client  # /metrics reads its counts

    async def close(endpoint: Endpoint) -> None:
        await client.close()

    return [close]


def _admin(
    cfg: ServeConfig, endpoint: Endpoint, role: Role | None
) -> tuple[
    list[Callable[[Endpoint], Awaitable[None]]], list[Callable[[Endpoint], Awaitable[None]]]
]:
    """``--admin-secret``: the live dashboard's channel; the hooks that start and stop its
    reporter (none without the option: no channel, no timer)."""
    if not cfg.admin_secret:
        return [], []
    from .admin import install

    workers = None
    if role is not None:
        workers = {"group": role.node, "index": role.index, "count": role.count}
    reporter = install(endpoint, cfg.admin_secret, workers=workers)

    async def start(endpoint: Endpoint) -> None:
        await reporter.start()

    async def stop(endpoint: Endpoint) -> None:
        await reporter.stop()

    return [start], [stop]


def _split(text: str) -> list[str]:
    return expand((text,))
