"""Your own channels on roost: ``roost serve myapp.realtime:app``.

An ``Application`` is what ``roost serve`` runs: topic patterns and their Channel
classes, who may connect, whether presence is kept, and start/stop hooks. ``roost
serve`` picks the broker (memory or Redis, Sentinel, Cluster), the limits, workers,
drain and every other option, and builds the Endpoint from the application, so the
same application runs on one process or on many nodes unchanged. The chat that ships
with roost is an application like any other (``roost.chat:application``).

::

    from roost import Application, Channel, JoinError, Reply

    app = Application()

    @app.channel("game:*")
    class Game(Channel):
        history_events = frozenset({"move"})      # kept, replayed to rejoiners (since)

        async def join(self, payload):
            if not self.assigns.get("user"):
                raise JoinError("who are you?")
            return {"history": (await self.history()).messages}

        async def handle_in(self, event, payload, ref):
            await self.broadcast("move", payload)
            return Reply.ok()

    @app.on_start
    async def announce(endpoint):
        await endpoint.broadcast("game:lobby", "server", {"up": True})
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .channels import Channel, Endpoint, Limits, Router
from .channels.endpoint import ConnectHook
from .channels.presence import Presence
from .pubsub import Broker, HistoryPolicy, PubSub
from .security.origin import OriginPolicy

Hook = Callable[[Endpoint], Awaitable[None]]
C = TypeVar("C", bound=type[Channel])


def accept_all(params: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    """The default connect hook: everyone, with no assigns."""
    return {}


@dataclass
class Application:
    """Channels and the hooks around them (see the module doc).

    ``connect(params, info)``: the socket's assigns from its connect parameters (and
    ``info``: ``auth_token``, ``peer``, ``headers``); return None/False or raise
    ConnectRefused to refuse with 403. ``presence``: keep presence (``Channel.track``) in
    the broker's store. ``static``: a directory served at ``/static/``, its
    ``index.html`` at ``/``. ``settings``: the application's own, read by its channels
    as ``self.socket.endpoint.settings``.
    """

    router: Router = field(default_factory=Router)
    connect: ConnectHook = accept_all
    presence: bool = True
    static: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    started: list[Hook] = field(default_factory=list)
    stopping: list[Hook] = field(default_factory=list)

    def channel(self, pattern: str) -> Callable[[C], C]:
        """Decorator: route ``pattern`` (``room:*`` or an exact topic) to the class."""

        def register(cls: C) -> C:
            self.router.channel(pattern, cls)
            return cls

        return register

    def on_connect(self, hook: ConnectHook) -> ConnectHook:
        """Decorator: the connect hook."""
        self.connect = hook
        return hook

    def on_start(self, hook: Hook) -> Hook:
        """Decorator: run once the node is up (its broker connected)."""
        self.started.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Decorator: run when the node stops, after its sockets were drained."""
        self.stopping.append(hook)
        return hook

    def endpoint(
        self,
        node: str,
        broker: Broker,
        *,
        limits: Limits | None = None,
        history: HistoryPolicy | None = None,
        presence_timeout: float = 30.0,
        presence_batch: float = 0.05,
        origins: OriginPolicy | None = None,
    ) -> Endpoint:
        """The Endpoint of this application on ``broker`` (what ``roost serve`` does)."""
        pubsub = PubSub(node, broker)
        presence = None
        if self.presence:
            # Entries live ttl; sweeps every ttl/3: a dead node's users leave within
            # about presence_timeout.
            store = broker.presence_store(ttl=presence_timeout * 0.75)
            presence = Presence(pubsub, store, batch=presence_batch)
        return Endpoint(
            router=self.router,
            pubsub=pubsub,
            connect=self.connect,
            settings=self.settings,
            origins=origins or OriginPolicy(),
            limits=limits or Limits(),
            history=history or HistoryPolicy(),
            presence=presence,
        )


class AppNotFound(ValueError):
    """``roost serve MODULE:NAME`` names nothing that is an Application."""


def load(spec: str) -> Application:
    """``module.path:name`` → the Application there (``name`` may be a function
    returning one, called without arguments: an application factory)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppNotFound(f"{spec!r}: expected MODULE:NAME, e.g. myapp.realtime:app")
    if os.getcwd() not in sys.path:  # as uvicorn: modules of the directory it runs in
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppNotFound(f"{spec!r}: cannot import {module_name}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppNotFound(f"{spec!r}: {module_name} has no {attr}") from None
    if not isinstance(target, Application) and callable(target):
        target = target()
    if not isinstance(target, Application):
        raise AppNotFound(
            f"{spec!r} is a {type(target).__name__}, not a roost.Application "
            "(or a function returning one)"
        )
    return target


__all__ = ["AppNotFound", "Application", "accept_all", "load"]
