"""Redis URLs to connection pools, with Redis Sentinel: ``redis+sentinel://``.

    redis+sentinel://[user:password@]host:26379,host:26380/<master-name>[/db][?query]
    rediss+sentinel://…   the same over TLS (masters and sentinels alike)

The user and password are the master's (and its replicas'); the sentinels are asked
without credentials unless the query gives theirs (``sentinel_username=``,
``sentinel_password=``). TLS files (``--redis-ca`` …) apply to both.

A sentinel pool is redis-py's ``SentinelConnectionPool`` with the blocking behaviour
of ``BlockingConnectionPool`` (one class, both bases): a connection resolves the
*current* master each time it connects (so every reconnect after a failover finds the
new master), a full pool is waited for at most ``timeout``, and nothing is retried
behind the caller's back — neither commands nor the sentinels' queries. Finding the
master costs one query per sentinel tried (the first that answers wins, each within
the socket deadlines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme → TLS
_SOCKET_KEYS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A ``redis+sentinel://`` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_auth: dict[str, str] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, master name, db and credentials; ValueError with the reason."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("a sentinel URL begins with redis+sentinel:// or rediss+sentinel://")
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = []
    for item in hosts.split(","):
        host, port = _address(item.strip())
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad sentinel address {item!r} (host:port)")
        sentinels.append((host, int(port)))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a sentinel URL names the master: …/<master-name>[/db]")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"bad database number {path[1]!r}")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"sentinel_username", "sentinel_password"}
    if unknown:
        raise ValueError(f"unknown sentinel URL parameter(s): {', '.join(sorted(unknown))}")
    auth = {k.removeprefix("sentinel_"): v for k, v in query.items()}
    return SentinelTarget(
        tuple(sentinels),
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        SCHEMES[parts.scheme.lower()],
        auth,
    )


def _address(item: str) -> tuple[str, str]:
    """host:port, [v6]:port, host or [v6] (port 26379) → (host, port text)."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else (rest or "26379")
    if ":" in item:
        host, _, port = item.rpartition(":")
        return host, port
    return item, "26379"


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Master connections found through Sentinel, waited for like a blocking pool."""


def _sentinel_pool(
    url: str, *, blocking: bool, max_connections: int, timeout: float | None, **kw: Any
) -> ConnectionPool:
    target = parse_sentinel_url(url)
    no_retry = Retry(NoBackoff(), 0)
    tls = {k: v for k, v in kw.items() if k.startswith("ssl_")}
    if target.tls:
        tls["ssl"] = True
    sentinel_kwargs = {
        **{k: kw[k] for k in _SOCKET_KEYS if k in kw},
        **tls,
        **target.sentinel_auth,
        "retry": no_retry,
        "health_check_interval": 0,
    }
    sentinel_kwargs.setdefault("socket_timeout", timeout)
    sentinel_kwargs.setdefault("socket_connect_timeout", timeout)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis-py 8.2
    kw = {**kw, "db": target.db, "ssl": target.tls}
    if target.username:
        kw["username"] = target.username
    if target.password:
        kw["password"] = target.password
    kw.setdefault("retry", no_retry)
    if blocking:
        return BlockingSentinelPool(  # type: ignore[no-untyped-call]
            target.service, manager, max_connections=max_connections, timeout=timeout, **kw
        )
    return SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service, manager, max_connections=max_connections, **kw
    )


def blocking_pool(
    url: str, *, max_connections: int, timeout: float | None, **kw: Any
) -> ConnectionPool:
    """A pool that waits up to ``timeout`` for a free connection, for any Redis URL."""
    if is_sentinel(url):
        return _sentinel_pool(
            url, blocking=True, max_connections=max_connections, timeout=timeout, **kw
        )
    return BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **kw
    )


def plain_pool(url: str, *, max_connections: int, **kw: Any) -> ConnectionPool:
    """A non-blocking pool (the subscriber's connection factory), for any Redis URL."""
    if is_sentinel(url):
        return _sentinel_pool(
            url,
            blocking=False,
            max_connections=max_connections,
            timeout=kw.get("socket_connect_timeout"),
            **kw,
        )
    return ConnectionPool.from_url(url, max_connections=max_connections, **kw)
