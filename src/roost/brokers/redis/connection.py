"""One Redis as a node reaches it: a command pool with deadlines, the subscriber's
connection, and whether Redis answers.

Every command has a deadline: ``timeout`` bounds the wait for a pooled connection,
the connect, and each reply (a frozen Redis — SIGSTOP, a stalled VM — is a timeout,
never a hang). The pool blocks instead of failing when every connection is busy: a
burst of joins queues behind ``pool_size`` connections for at most ``timeout``
(redis-py's default pool raises ``MaxConnectionsError`` on the first command over the
limit, which lost join histories and publish batches under bursts). Commands are
not retried by redis-py: the callers decide (the publisher retries what Redis
certainly did not get; a join that cannot read its history is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from .sentinel import blocking_pool, plain_pool

log = logging.getLogger("roost.redis")

BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)  # reconnects: quick at first, then once a second
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class RedisConnection:
    """The node's pool of command connections and its subscriber connection factory."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        pool_size: int = 32,
        clock: Callable[[], float] = time.monotonic,
        **connection_kwargs: Any,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self.connection_kwargs = dict(connection_kwargs)  # TLS files etc., for other clients
        kw = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "health_check_interval": 0,
            **connection_kwargs,
        }
        # Any Redis URL, redis+sentinel:// included (sentinel.py): a sentinel pool finds
        # the current master at every connect, with the same deadlines.
        self.pool = blocking_pool(url, max_connections=pool_size, timeout=timeout, **kw)
        self.redis = aioredis.Redis(connection_pool=self.pool)
        # The publisher's own lane: its one pipeline at a time never waits behind joins,
        # history reads and presence in the shared pool (a join flood that fills the pool
        # must not delay other users' messages).
        self._publish_pool = blocking_pool(url, max_connections=2, timeout=timeout, **kw)
        self.publishing = aioredis.Redis(connection_pool=self._publish_pool)
        # RESP2 and no read deadline on the subscriber: (un)subscribe confirmations and
        # messages come back from read_response() in order, and a quiet channel is fine
        # (the liveness probe judges a silent subscription).
        self._sub_pool = plain_pool(
            url, max_connections=1, **{**kw, "protocol": 2, "socket_timeout": None}
        )
        #: Redis answered the last health check (PING) within its deadline.
        self.responsive = False
        self.last_ok = 0.0

    def subscriber(self) -> AbstractConnection:
        """A new, unconnected connection for the subscriber (one at a time); through
        Sentinel it connects to whichever Redis is the master when it connects."""
        return self._sub_pool.make_connection()  # type: ignore[no-untyped-call,no-any-return]

    async def ping(self) -> bool:
        """One PING inside the deadline; records whether Redis answered."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except REDIS_ERRORS:
            # A cancel that arrives in redis-py's read can come out as a connection or
            # timeout error: the task was asked to stop, so it stops (a swallowed cancel
            # left the health task running and the broker's stop waiting for it forever).
            reraise_cancel()
            self.responsive = False
            return False
        self.responsive = True
        self.last_ok = self.clock()
        return True

    async def watch(self, interval: float, report: Callable[[bool], None]) -> None:
        """PING every ``interval`` and report whether Redis answered (readiness)."""
        while True:
            report(await self.ping())
            await asyncio.sleep(interval)

    async def wait_until_up(self) -> None:
        """Block until Redis answers a PING (at start: the node waits for its Redis)."""
        attempt = 0
        while not await self.ping():
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            if attempt % 10 == 0:
                log.warning("redis unreachable at %s; retrying", safe_url(self.url))
            attempt += 1
            await asyncio.sleep(delay)
        if attempt:
            log.info("redis reachable at %s", safe_url(self.url))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.publishing.aclose()
        with contextlib.suppress(Exception):
            await self._publish_pool.disconnect()
        with contextlib.suppress(Exception):
            await self.pool.disconnect()
        with contextlib.suppress(Exception):
            await self._sub_pool.disconnect()


def reraise_cancel() -> None:
    """Inside an ``except`` of Redis errors: raise CancelledError if this task was asked to
    stop. redis-py can turn a cancel that lands in its read into a connection or timeout
    error; swallowed, the task runs on while its owner waits for it to end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def safe_url(url: str) -> str:
    """The URL without its password (in the user info or the query), for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user + ':***@' if user else '***@'}{host}"
    base, q, query = rest.partition("?")
    if q:
        parts = [
            f"{key}=***"
            if key.lower().endswith(("password", "pass", "pwd"))
            else f"{key}{eq}{value}"
            for key, eq, value in (item.partition("=") for item in query.split("&"))
        ]
        rest = base + "?" + "&".join(parts)
    return f"{scheme}{sep}{rest}"
