"""Bytes Redis sent: per node from its TCP counters, and in all from Redis's stats."""

from __future__ import annotations

from urllib.parse import urlsplit

from .harness import (
    tcp_bytes_received,
)


def redis_port(url: str) -> int:
    return urlsplit(url).port or 6379


def subscriber_ports(url: str) -> set[int]:
    """Client ports of the connections Redis lists as pub/sub subscribers."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        ports = set()
        for c in r.client_list():
            if "P" in str(c.get("flags", "")) or int(c.get("sub", 0) or 0) > 0:
                ports.add(int(str(c["addr"]).rsplit(":", 1)[1]))
        return ports
    finally:
        r.close()


def redis_out_bytes(url: str) -> int:
    import redis

    r = redis.Redis.from_url(url)
    try:
        return int(r.info("stats")["total_net_output_bytes"])
    finally:
        r.close()


class NodeBytes:
    """Bytes each node received from Redis: its subscriber connection, and all of them."""

    def __init__(self, url: str, pids: dict[str, int]) -> None:
        self.url = url
        self.port = redis_port(url)
        self.pids = pids
        subs = subscriber_ports(url)
        self.sub_port: dict[str, int | None] = {}
        for name, pid in pids.items():
            conns = tcp_bytes_received(pid, self.port) or {}
            mine = [p for p in conns if p in subs]
            self.sub_port[name] = mine[0] if len(mine) == 1 else None

    def read(self) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for name, pid in self.pids.items():
            conns = tcp_bytes_received(pid, self.port)
            if conns is None:
                out[name] = {"subscriber": None, "all": None}
                continue
            port = self.sub_port[name]
            out[name] = {
                "subscriber": conns.get(port) if port is not None else None,
                "all": sum(conns.values()),
            }
        return out

    @staticmethod
    def delta(
        a: dict[str, dict[str, int | None]], b: dict[str, dict[str, int | None]]
    ) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for name in a:
            out[name] = {}
            for key in ("subscriber", "all"):
                x, y = a[name][key], b[name][key]
                out[name][key] = None if x is None or y is None else y - x
        return out
