"""The live dashboard (``roost serve --admin-secret``): the ``admin:cluster`` channel.

Every node with the secret set broadcasts a snapshot of itself on ``admin:cluster``
every 2 s through its PubSub (``snapshot.Reporter``), so a dashboard joined on any
node hears every node. Only a join carrying the secret is accepted
(``channel.AdminChannel``); clients cannot push on the topic. The page is
``static/index.html``, served by the server at ``/admin`` when this is installed.
Without the secret nothing here runs: no route, no channel, no timer.
"""

from __future__ import annotations

from typing import Any

from ..channels import Endpoint
from .access import TOKEN_PREFIX, SkipAdmin, admit
from .channel import SETTINGS_KEY, TOPIC, AdminChannel, AdminSettings
from .snapshot import Reporter


def install(endpoint: Endpoint, secret: str, *, workers: dict[str, Any] | None = None) -> Reporter:
    """Serve ``admin:cluster`` on ``endpoint`` for holders of ``secret``; return the
    reporter (the caller starts and stops it with the endpoint). Call it last: it wraps
    the endpoint's connect hook and guard as they are (see access.py)."""
    if not secret:
        raise ValueError("the admin dashboard needs a secret")
    reporter = Reporter(endpoint, workers=workers)
    settings = AdminSettings(secret, reporter)
    endpoint.settings[SETTINGS_KEY] = settings
    endpoint.router.channel(TOPIC, AdminChannel)
    endpoint.connect = admit(endpoint.connect, settings)
    if endpoint.guard is not None:
        endpoint.guard = SkipAdmin(endpoint.guard)
    return reporter


__all__ = ["TOKEN_PREFIX", "TOPIC", "AdminChannel", "AdminSettings", "Reporter", "install"]
