"""What one client may do: frame sizes, rates, connection caps, whose address counts."""

from __future__ import annotations

from dataclasses import dataclass

from ..channels import Limits
from ..security.clientip import TrustedProxies
from .option import expand, opt

L = Limits


@dataclass(frozen=True)
class LimitOptions:
    max_frame: int = opt(
        L.max_frame,
        "--max-frame",
        "ROOST_MAX_FRAME",
        "Largest frame a client may send, in bytes (larger: close 1009).",
    )
    idle_timeout: float = opt(
        L.idle_timeout,
        "--idle-timeout",
        "ROOST_IDLE_TIMEOUT",
        "Close a socket that sent nothing (not even a heartbeat) for this many seconds.",
    )
    max_channels: int = opt(
        L.max_channels, "--max-channels", "ROOST_MAX_CHANNELS", "Channels one socket may join."
    )
    max_buffer: int = opt(
        L.max_buffer,
        "--max-buffer",
        "ROOST_MAX_BUFFER",
        "Unsent bytes to one client before it is disconnected (1013).",
    )
    msg_rate: float = opt(
        L.msg_rate, "--msg-rate", "ROOST_MSG_RATE", "Pushes per second per socket (0: unlimited)."
    )
    msg_burst: float = opt(L.msg_burst, "--msg-burst", "ROOST_MSG_BURST", "Pushes saved up.")
    join_rate: float = opt(
        L.join_rate, "--join-rate", "ROOST_JOIN_RATE", "Joins per second per socket (0: unlimited)."
    )
    join_burst: float = opt(L.join_burst, "--join-burst", "ROOST_JOIN_BURST", "Joins saved up.")
    join_rate_per_ip: float = opt(
        20.0,
        "--join-rate-per-ip",
        "ROOST_JOIN_RATE_PER_IP",
        "Joins per second per client address over all its sockets (0: unlimited); beyond: "
        "join error 'rate limited', refused before any work (one address's join flood "
        "cannot slow other users).",
    )
    join_burst_per_ip: float = opt(
        L.join_burst_per_ip,
        "--join-burst-per-ip",
        "ROOST_JOIN_BURST_PER_IP",
        "Joins saved up per client address.",
    )
    handshakes_in_flight: int = opt(
        L.handshakes_in_flight,
        "--handshakes-in-flight",
        "ROOST_HANDSHAKES_IN_FLIGHT",
        "WebSocket upgrades waiting for their answer (connect hook, token) at once; past "
        "it a new connection gets 503 + a jittered Retry-After before its head is parsed "
        "(0: no cap).",
        minimum=0,
    )
    shed_lag: float = opt(
        L.shed_lag,
        "--shed-lag",
        "ROOST_SHED_LAG",
        "Event-loop lag in seconds past which new WebSocket connections get 503 + a "
        "jittered Retry-After at once (the node serves at its capacity; 0: not watched).",
        minimum=0,
    )
    joins_in_flight: int = opt(
        L.joins_in_flight,
        "--joins-in-flight",
        "ROOST_JOINS_IN_FLIGHT",
        "Joins the node works on at once; more wait their turn inside --push-deadline "
        "('temporarily unavailable' past it): a burst of joins never holds other users' "
        "messages behind it.",
        minimum=1,
    )
    push_deadline: float = opt(
        L.push_deadline,
        "--push-deadline",
        "ROOST_PUSH_DEADLINE",
        "Seconds from a client's message reaching the node to its answer, whatever it waits "
        "for (queue, Redis pool, command, reconnect): past it the client gets an error reply "
        "at once, never a late ok. Keep it under the clients' push timeout (phoenix.js: 10 s).",
        minimum=0.1,
    )
    max_connections: int = opt(
        L.max_connections,
        "--max-connections",
        "ROOST_MAX_CONNECTIONS",
        "Sockets per node; beyond: HTTP 503.",
    )
    max_connections_per_ip: int = opt(
        L.max_connections_per_ip,
        "--max-connections-per-ip",
        "ROOST_MAX_CONNECTIONS_PER_IP",
        "Open sockets and long-poll sessions per client address (IPv6: per /64) on this "
        "node, so that one client cannot fill --max-connections; beyond: HTTP 429 (0: no cap).",
    )
    conn_rate: float = opt(
        L.conn_rate,
        "--conn-rate",
        "ROOST_CONN_RATE",
        "New sockets and long-poll sessions per second per client address "
        "(0: unlimited); beyond: HTTP 429 with Retry-After.",
    )
    conn_burst: float = opt(
        L.conn_burst, "--conn-burst", "ROOST_CONN_BURST", "New connections saved up per address."
    )
    trusted_proxies: tuple[str, ...] = opt(
        (),
        "--trusted-proxy",
        "ROOST_TRUSTED_PROXIES",
        "Address or CIDR of a proxy in front of roost (repeatable, or a comma list). "
        "Only from these peers is X-Forwarded-For read: the client is its right-most "
        "address that is not a trusted proxy. Default: none (the peer is the client).",
        multiple=True,
        show_default=False,
    )

    def limits(self) -> Limits:
        return Limits(
            max_frame=self.max_frame,
            idle_timeout=self.idle_timeout,
            max_channels=self.max_channels,
            max_buffer=self.max_buffer,
            msg_rate=self.msg_rate,
            msg_burst=self.msg_burst,
            join_rate=self.join_rate,
            join_burst=self.join_burst,
            join_rate_per_ip=self.join_rate_per_ip,
            join_burst_per_ip=self.join_burst_per_ip,
            joins_in_flight=self.joins_in_flight,
            handshakes_in_flight=self.handshakes_in_flight,
            shed_lag=self.shed_lag,
            push_deadline=self.push_deadline,
            max_connections=self.max_connections,
            max_connections_per_ip=self.max_connections_per_ip,
            conn_rate=self.conn_rate,
            conn_burst=self.conn_burst,
        )

    def proxies(self) -> TrustedProxies:
        return TrustedProxies(expand(self.trusted_proxies))
