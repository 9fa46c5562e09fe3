"""``admin:cluster``: join with ``{"secret": ...}``; snapshots of every node arrive as
``snapshot`` broadcasts. Read only: any client push is refused."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from ..channels import Channel, JoinError, Reply

log = logging.getLogger("roost.admin")

TOPIC = "admin:cluster"
SETTINGS_KEY = "admin"
SNAPSHOT = "snapshot"
#: A node not heard from for this long is shown as gone (the page's rule; in the reply).
STALE_AFTER = 10.0
#: The join reply waits this long for the node registry, then answers without it.
REGISTRY_TIMEOUT = 3.0


class Snapshots(Protocol):
    """What the channel reads of the reporter (snapshot.Reporter)."""

    @property
    def interval(self) -> float: ...

    @property
    def last(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class AdminSettings:
    secret: str
    reporter: Snapshots

    def admits(self, given: Any) -> bool:
        """The secret, compared in constant time (any other value: no)."""
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self.secret.encode())

    def __repr__(self) -> str:  # never the secret in a log line
        return "AdminSettings(secret=<hidden>)"


class AdminChannel(Channel):
    """The dashboard's channel. The join reply: this node, the snapshot interval, how
    long until a silent node counts as gone, and the node registry (``nodes``, None
    when the broker could not tell); then the latest snapshot of this node."""

    def _settings(self) -> AdminSettings | None:
        settings = self.socket.endpoint.settings.get(SETTINGS_KEY)
        return settings if isinstance(settings, AdminSettings) else None

    async def join(self, payload: Any) -> Any:
        settings = self._settings()
        given = payload.get("secret") if isinstance(payload, dict) else None
        if settings is None or self.topic != TOPIC or not settings.admits(given):
            log.warning("admin join refused: wrong secret")
            raise JoinError("unauthorized")
        broker = self.socket.endpoint.pubsub.broker
        nodes: list[str] | None
        try:
            nodes = sorted({*await asyncio.wait_for(broker.nodes(), REGISTRY_TIMEOUT), self.node})
        except Exception as exc:  # Redis down or slow: the snapshots still tell
            log.warning("node registry unavailable: %r", exc)
            nodes = None
        return {
            "node": self.node,
            "nodes": nodes,
            "interval": settings.reporter.interval,
            "stale_after": STALE_AFTER,
        }

    async def after_join(self) -> None:
        settings = self._settings()
        if settings is not None and settings.reporter.last is not None:
            self.push(SNAPSHOT, settings.reporter.last)

    async def handle_in(self, event: str, payload: Any, ref: Any) -> Reply | None:
        return Reply.error({"reason": "read only"})
