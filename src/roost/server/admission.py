"""Admission: whether a new connection may become a Socket, for every transport.

Origin, the node's connection limit, the protocol version and the application's
connect hook, in that order; the WebSocket and long-poll handlers both ask here
before they build a Socket. ``ENDPOINT_KEY`` is where the app keeps its Endpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..channels import ConnectRefused, Endpoint
from ..protocol import ProtocolError, Serializer, for_vsn

log = logging.getLogger("roost.admission")

ENDPOINT_KEY: web.AppKey[Endpoint] = web.AppKey("endpoint", Endpoint)


async def admit(
    request: web.Request,
    endpoint: Endpoint,
    params: dict[str, str],
    auth_token: str | None,
    transport: str,
) -> tuple[Serializer, dict[str, Any]] | web.Response:
    """Origin, connection limit, protocol version, connect hook: a refusal, or go."""
    if not endpoint.origins.allows(request.headers.get("Origin"), request.host, request.secure):
        log.info("refused origin=%s host=%s", request.headers.get("Origin"), request.host)
        return web.Response(status=403, text="origin not allowed\n")
    if len(endpoint.sockets) >= endpoint.limits.max_connections:
        return web.Response(status=503, text="too many connections\n", headers={"Retry-After": "5"})
    try:
        serializer = for_vsn(params.get("vsn"))
    except ProtocolError as exc:
        return web.Response(status=403, text=exc.reason + "\n")
    info: dict[str, Any] = {
        "peer": request.remote,
        "headers": request.headers,
        "auth_token": auth_token,
        "transport": transport,
    }
    try:
        assigns = await endpoint.authorize(params, info)
    except ConnectRefused as refused:
        endpoint.stats.refused += 1
        return web.Response(status=403, text=refused.reason + "\n")
    if assigns is None:
        endpoint.stats.refused += 1
        return web.Response(status=403, text="connection refused\n")
    return serializer, assigns
