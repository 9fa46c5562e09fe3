"""One idle Phoenix client of the ``workers`` scenario that reconnects as phoenix.js does.

A :class:`Member` is its own asyncio protocol, reused for every connection it makes:
it upgrades, joins its room, then sits idle (heartbeats only when told). When its
connection ends it reconnects after phoenix.js's ``reconnectAfterMs`` back-off (10, 50,
100, 150, 200, 250, 500, 1000, 2000 ms, then 5 s; the count restarts once a connection
opens) and joins its room again; a join refused or unanswered is tried again on the same
socket after ``rejoinAfterMs`` (1, 2, 5 s, then 10 s). Frames are not parsed: the
join reply is found with a regex over the first bytes after the join (nothing else is
sent on the topic before it), then everything is only counted.

Lifecycle, as a table (anything else is a bug and raises)::

    IDLE --connect--> CONNECTING --upgraded--> OPEN --join--> JOINING --ok--> JOINED
    CONNECTING --failed--> BACKOFF --due--> CONNECTING
    JOINING --refused--> REJOIN_WAIT --due--> JOINING
    OPEN/JOINING/JOINED/REJOIN_WAIT --lost--> BACKOFF

The first join is sent when the fleet says so (``join``); after a reconnect the member
joins as soon as its socket is open.
    any --close--> CLOSED
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import cast

import orjson

from .loadclient import client_frame, upgrade_request

RECONNECT_MS = (10, 50, 100, 150, 200, 250, 500, 1000, 2000)  # phoenix.js, then 5000
REJOIN_MS = (1000, 2000, 5000)  # phoenix.js, then 10000
ATTEMPT_TIMEOUT = 10.0  # phoenix.js's push timeout: an upgrade or join unanswered this long fails
HEAD_CAP = 4096
REPLY_RE = re.compile(rb'"phx_reply",\{"status":"(ok|error)"')
NODE_RE = re.compile(rb'"node":"([^"]{1,64})"')
REASON_RE = re.compile(rb'"reason":"([^"]{1,80})"')


def reconnect_after(tries: int) -> float:
    return (RECONNECT_MS[tries - 1] if tries <= len(RECONNECT_MS) else 5000) / 1000


def rejoin_after(tries: int) -> float:
    return (REJOIN_MS[tries - 1] if tries <= len(REJOIN_MS) else 10000) / 1000


class S(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    JOINING = "joining"
    JOINED = "joined"
    REJOIN_WAIT = "rejoin_wait"
    BACKOFF = "backoff"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[S, str], S] = {
    (S.IDLE, "connect"): S.CONNECTING,
    (S.CONNECTING, "upgraded"): S.OPEN,
    (S.OPEN, "join"): S.JOINING,
    (S.OPEN, "lost"): S.BACKOFF,
    (S.CONNECTING, "failed"): S.BACKOFF,
    (S.BACKOFF, "due"): S.CONNECTING,
    (S.JOINING, "ok"): S.JOINED,
    (S.JOINING, "refused"): S.REJOIN_WAIT,
    (S.REJOIN_WAIT, "due"): S.JOINING,
    (S.JOINING, "lost"): S.BACKOFF,
    (S.JOINED, "lost"): S.BACKOFF,
    (S.REJOIN_WAIT, "lost"): S.BACKOFF,
}


class Stats:
    """What a fleet's members did, summed (one per process)."""

    __slots__ = ("failed_connects", "failed_joins", "last_joined", "lost", "reasons", "rejoined")

    def __init__(self) -> None:
        self.lost = 0  # joined connections that ended
        self.rejoined = 0  # joins after a reconnect
        self.failed_connects = 0  # connect or upgrade attempts that failed
        self.failed_joins = 0  # joins refused or unanswered
        self.last_joined = 0.0  # wall clock of the latest join
        self.reasons: Counter[str] = Counter()  # why attempts failed

    def failed(self, reason: str, join: bool = False) -> None:
        if join:
            self.failed_joins += 1
        else:
            self.failed_connects += 1
        self.reasons[reason] += 1


class Member(asyncio.Protocol):
    __slots__ = (
        "buf", "connects", "host", "join", "local", "node", "on_joined", "opened", "path", "port",
        "received", "rejoins", "state", "stats", "timer", "transport", "tries", "was_joined",
    )  # fmt: skip

    def __init__(
        self,
        port: int,
        path: str,
        topic: str,
        payload: dict[str, object],
        local: tuple[str, int] | None,
        stats: Stats,
        on_joined: Callable[[Member], None],
    ) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.path = path
        self.join = client_frame(orjson.dumps(["1", "1", topic, "phx_join", payload]))
        self.local = local
        self.stats = stats
        self.on_joined = on_joined
        self.state = S.IDLE
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.node = ""
        self.received = 0
        self.tries = 0  # reconnect attempts since the last open connection
        self.rejoins = 0
        self.connects = 0
        self.was_joined = False
        self.opened: asyncio.Future[None] | None = None  # the first upgrade, awaited by the fleet
        self.timer: asyncio.TimerHandle | None = None

    def _to(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(f"member: {event} in state {self.state.value}") from None

    # -- connecting ------------------------------------------------------------------------
    async def connect(self) -> None:
        """The first attempt (later ones follow the back-off by themselves)."""
        self._to("connect")
        await self._attempt()

    async def _attempt(self) -> None:
        """TCP and the upgrade request; the rest happens in the protocol callbacks."""
        self.connects += 1
        self.buf = b""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, "127.0.0.1", self.port, local_addr=self.local),
                ATTEMPT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            if self.state is S.CONNECTING and self.transport is None:
                self._failed(f"connect: {type(exc).__name__}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(upgrade_request(self.host, self.path))
        self._arm(ATTEMPT_TIMEOUT, self._upgrade_timeout)

    def _upgrade_timeout(self) -> None:
        self.timer = None
        if self.state is S.CONNECTING:
            self._drop()
            self._failed("upgrade: timeout")

    def _failed(self, reason: str) -> None:
        self.stats.failed(reason)
        self._to("failed")
        self._backoff()

    def _backoff(self) -> None:
        self.tries += 1
        self._arm(reconnect_after(self.tries), self._due)

    def _due(self) -> None:
        self.timer = None
        if self.state is S.BACKOFF:
            self._to("due")
            asyncio.get_running_loop().create_task(self._attempt())

    # -- bytes -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        state = self.state
        if state is S.JOINED or state is S.REJOIN_WAIT or state is S.OPEN:
            return
        if state is S.CONNECTING:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self._drop()
                self._failed(f"upgrade: {self.buf[9:12].decode(errors='replace')}")
                return
            rest = self.buf[end + 4 :]
            self.buf = b""
            self.tries = 0  # phoenix.js resets its reconnect timer once a socket opens
            self._cancel()
            self._to("upgraded")
            if self.opened is not None and not self.opened.done():
                self.opened.set_result(None)
            if self.was_joined:
                self.send_join()
            if rest:
                self.data_received(rest)
            return
        if state is S.JOINING:
            self.buf = (self.buf + data)[:HEAD_CAP]
            m = REPLY_RE.search(self.buf)
            if m is None:
                return
            if m.group(1) == b"ok":
                node = NODE_RE.search(self.buf, m.end())
                if node is None and len(self.buf) < HEAD_CAP:
                    return  # the rest of the reply is on its way
                self.node = node.group(1).decode() if node else "?"
                self._joined()
            else:
                why = REASON_RE.search(self.buf, m.end())
                self._join_failed(f"join: {why.group(1).decode() if why else 'error reply'}")

    def send_join(self) -> None:
        self._to("join")
        self._write_join()

    def _write_join(self) -> None:
        assert self.transport is not None
        self.buf = b""
        try:
            self.transport.write(self.join)
        except (RuntimeError, OSError):
            # uvloop closed the transport and its connection_lost has not run yet: end the
            # attempt now (the late call finds BACKOFF and returns) so the client retries.
            self.connection_lost(None)
            return
        self._arm(ATTEMPT_TIMEOUT, self._join_timeout)

    def _join_timeout(self) -> None:
        self.timer = None
        if self.state is S.JOINING:
            self._join_failed("join: timeout")

    def _join_failed(self, reason: str) -> None:
        """Refused or unanswered: the same join again after rejoinAfterMs."""
        self.stats.failed(reason, join=True)
        self._to("refused")
        self.rejoins += 1
        self._arm(rejoin_after(self.rejoins), self._rejoin_due)

    def _rejoin_due(self) -> None:
        self.timer = None
        if self.state is S.REJOIN_WAIT and self.transport and not self.transport.is_closing():
            self._to("due")
            self._write_join()

    def _joined(self) -> None:
        self._cancel()
        self.buf = b""
        self.rejoins = 0
        self._to("ok")
        stats = self.stats
        if self.was_joined:
            stats.rejoined += 1
        self.was_joined = True
        stats.last_joined = time.time()
        self.on_joined(self)

    # -- the end of a connection -----------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        state = self.state
        if state is S.CLOSED or state is S.BACKOFF:
            return  # closed by us, or already counted
        self._cancel()
        if state is S.CONNECTING:
            self._failed("upgrade: closed")
            return
        if state is S.JOINED:
            self.stats.lost += 1
        else:  # OPEN, JOINING, REJOIN_WAIT: the attempt did not end in a join
            self.stats.failed(f"{state.value}: closed")
        self._to("lost")
        self._backoff()

    def heartbeat(self, ref: int) -> None:
        if self.state is S.JOINED and self.transport is not None:
            self.transport.write(
                client_frame(orjson.dumps([None, str(ref), "phoenix", "heartbeat", {}]))
            )

    def close(self) -> None:
        self._cancel()
        self.state = S.CLOSED
        self._drop()

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _arm(self, delay: float, fn: Callable[[], None]) -> None:
        self._cancel()
        self.timer = asyncio.get_running_loop().call_later(delay, fn)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
