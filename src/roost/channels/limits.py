"""What a Socket needs of its endpoint: the limits it enforces, the counters it bumps,
and (as the ``SocketEndpoint`` Protocol) the router, pubsub and presence it uses.

``Endpoint`` (endpoint.py, the top of the package) satisfies ``SocketEndpoint``; the
socket never imports it, so the arrows run one way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..security.clientlimit import ClientBuckets
from .contracts import ChannelEndpoint, Guard
from .router import Router


@dataclass
class Limits:
    """Per-socket and per-node limits; every one is answered clearly (README: Security)."""

    max_channels: int = 100  # joins beyond: error "too many channels joined"
    max_frame: int = 64 * 1024  # bigger frames: close 1009
    idle_timeout: float = 60.0  # nothing received for this long: close 1001
    max_buffer: int = 1024 * 1024  # unsent bytes to a slow client: past it, close 1013
    msg_rate: float = 50.0  # pushes per second (0: unlimited); excess: "rate limited"
    msg_burst: float = 100.0
    join_rate: float = 10.0  # joins per second; excess: "rate limited"
    join_burst: float = 100.0
    # Per client address (clientip.client_key), over all its sockets: joins a second / saved
    # up (0: unlimited). One address's join flood draws on its own budget and is refused
    # cheaply past it ("rate limited", which phoenix.js retries with its rejoin backoff),
    # so it cannot take the node's loop and Redis from other users. Off here (an endpoint
    # made in code); `roost serve` turns it on (20/s, 100: config/limits.py).
    join_rate_per_ip: float = 0.0
    join_burst_per_ip: float = 100.0
    # Joins a node works on at once (its join lane): more wait their turn, inside their
    # push deadline ("temporarily unavailable" past it). A burst of joins then takes the
    # loop a few at a time, and other users' messages are never behind hundreds of them.
    joins_in_flight: int = 16
    # Past these a new WebSocket connection gets 503 + a jittered Retry-After from its first
    # bytes (server/shedding.py): WebSocket upgrades waiting for their answer (0: no cap),
    # and the event loop's lag in seconds (0: not watched).
    handshakes_in_flight: int = 256
    shed_lag: float = 0.5
    abuse_limit: int = 200  # rate-limited pushes in a row: close 1008
    # Seconds from a message's arrival to its answer, whatever it waits for (queue, Redis
    # pool, command, reconnect); past it: an error reply at once (pubsub/deadline.py).
    # Well under phoenix.js's 10 s push timeout, so a client never gives up on an ok.
    push_deadline: float = 5.0
    max_connections: int = 25_000  # per node; beyond: HTTP 503 before the upgrade
    # Per client address (clientip.client_key; 0: unlimited), for WebSocket upgrades and
    # long-poll sessions alike: new connections a second / saved up, and open at once.
    # Beyond either: HTTP 429 with Retry-After. One client cannot fill max_connections.
    conn_rate: float = 10.0
    conn_burst: float = 50.0
    max_connections_per_ip: int = 500


@dataclass
class EndpointStats:
    """Counters the sockets bump (plain ints: read by /metrics at scrape time)."""

    joins: int = 0
    leaves: int = 0
    heartbeats: int = 0
    pushes: int = 0
    replies_out: int = 0
    pushes_out: int = 0
    expired: int = 0  # messages that waited out their push deadline before handling
    rate_limited: int = 0
    slow_consumers: int = 0
    connections_total: int = 0
    refused: int = 0
    throttled: int = 0  # new connections answered 429 (per-client rate or cap)
    shed: int = 0  # new connections answered 503 at once: the node past its capacity
    rebalanced: int = 0  # sockets closed (1012) to even out a worker group (server/balance.py)


class SocketEndpoint(ChannelEndpoint, Protocol):
    """The endpoint as a Socket sees it: a ChannelEndpoint plus limits, counters, router."""

    @property
    def limits(self) -> Limits: ...

    @property
    def stats(self) -> EndpointStats: ...

    @property
    def router(self) -> Router: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def guard(self) -> Guard | None: ...

    @property
    def join_buckets(self) -> ClientBuckets: ...

    @property
    def join_lane(self) -> asyncio.Semaphore: ...
