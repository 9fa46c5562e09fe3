"""Admission: whether a new connection may become a Socket, for every transport.

The client's new-connection rate, Origin, the node's connection limit, the client's
open-connection cap, the protocol version and the application's connect hook, in
that order; the WebSocket and long-poll handlers both ask here before they build a
Socket. ``ENDPOINT_KEY`` is where the app keeps its Endpoint, ``BUCKETS_KEY`` its
per-client buckets of new connections.

The client is ``client_of(request)`` (``security.clientip``: the peer, or behind a
trusted proxy the right-most untrusted X-Forwarded-For entry). Every attempt spends
one of its tokens, refused ones too, so a client cannot probe for free.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Union

from aiohttp import hdrs, web

from ..channels import ConnectRefused, Endpoint
from ..protocol import ProtocolError, Serializer, for_vsn
from ..security.clientip import client_key
from ..security.clientlimit import ClientBuckets, retry_after

if TYPE_CHECKING:
    from .handshake import HandshakeRequest

Request = Union[web.Request, "HandshakeRequest"]  # the aiohttp route's, or the front's

log = logging.getLogger("roost.admission")

ENDPOINT_KEY: web.AppKey[Endpoint] = web.AppKey("endpoint", Endpoint)
BUCKETS_KEY: web.AppKey[ClientBuckets] = web.AppKey("connect_buckets", ClientBuckets)
#: Request slots: the client (address, key), computed once; the Retry-After of a refusal.
_CLIENT: web.RequestKey[tuple[str | None, str | None]] = web.RequestKey("roost.client", tuple)
_RETRY_AFTER: web.RequestKey[str] = web.RequestKey("roost.retry_after", str)
FULL_RETRY_AFTER = "5"  # node or client at its open-connection cap: try again in 5 s


def client_buckets(endpoint: Endpoint) -> ClientBuckets:
    """The per-client buckets of new connections ``build_app`` keeps for ``endpoint``."""
    return ClientBuckets(endpoint.limits.conn_rate, endpoint.limits.conn_burst)


def client_of(request: Request) -> str | None:
    """The client as limits count it (``Socket.peer``): IPv4 address or IPv6 /64."""
    return _client(request)[1]


def _client(request: Request) -> tuple[str | None, str | None]:
    found = request.get(_CLIENT)
    if found is None:
        proxies = request.app[ENDPOINT_KEY].proxies
        address = proxies.client(request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, []))
        found = (None, None) if address is None else (str(address), client_key(address))
        request[_CLIENT] = found
    return found


def _too_many(request: Request, endpoint: Endpoint, reason: str, after: str) -> web.Response:
    endpoint.stats.throttled += 1
    request[_RETRY_AFTER] = after
    return web.Response(status=429, text=reason + "\n", headers={"Retry-After": after})


async def carry_retry_after(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: a refusal's Retry-After reaches the client even when
    the transport answers in its own form (long-poll: HTTP 200, the status in the body)."""
    after = request.get(_RETRY_AFTER)
    if after is not None and hdrs.RETRY_AFTER not in response.headers:
        response.headers[hdrs.RETRY_AFTER] = after


async def admit(
    request: Request,
    endpoint: Endpoint,
    params: dict[str, str],
    auth_token: str | None,
    transport: str,
) -> tuple[Serializer, dict[str, Any]] | web.Response:
    """Rate, Origin, connection caps, protocol version, connect hook: a refusal, or go."""
    address, client = _client(request)
    limits = endpoint.limits
    if client is not None:
        wait = request.app[BUCKETS_KEY].take(client, endpoint.clock())
        if wait > 0:
            return _too_many(request, endpoint, "too many new connections", retry_after(wait))
    if not endpoint.origins.allows(request.headers.get("Origin"), request.host, request.secure):
        log.info("refused origin=%s host=%s", request.headers.get("Origin"), request.host)
        return web.Response(status=403, text="origin not allowed\n")
    if len(endpoint.sockets) >= limits.max_connections:
        request[_RETRY_AFTER] = FULL_RETRY_AFTER
        return web.Response(
            status=503, text="too many connections\n", headers={"Retry-After": FULL_RETRY_AFTER}
        )
    cap = limits.max_connections_per_ip
    if client is not None and cap > 0 and endpoint.sockets.count(client) >= cap:
        log.info("refused client=%s: %d open connections", client, cap)
        reason = "too many connections from this address"
        return _too_many(request, endpoint, reason, FULL_RETRY_AFTER)
    try:
        serializer = for_vsn(params.get("vsn"))
    except ProtocolError as exc:
        return web.Response(status=403, text=exc.reason + "\n")
    info: dict[str, Any] = {
        "peer": address,
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
