"""Graceful drain: on shutdown, close sockets with 1012 spread over a window.

Spreading the closes (instead of all at once) lets clients reconnect to the other
nodes without a thundering herd. The node reports not ready from the first moment.
"""

from __future__ import annotations

import asyncio
import logging

from ..channels import Endpoint, Socket
from ..channels.socket import CLOSE_RESTART
from .wsconn import busy

log = logging.getLogger("roost.drain")

STEPS = 20
SETTLE = 3.0  # seconds the drain waits for closed sockets to leave their channels


def close_restart(socket: Socket, reason: str = "server restart") -> None:
    """Close with 1012: the client reconnects (phoenix.js, roost.client) and rejoins with
    ``since``. The drain's close, and the rebalancer's (balance.py)."""
    socket.wire.close(CLOSE_RESTART, reason)


async def drain(endpoint: Endpoint, window: float, settle_for: float = SETTLE) -> None:
    endpoint.draining = True
    sockets = list(endpoint.sockets)
    log.info("draining %d sockets over %.1fs", len(sockets), window)
    if sockets:
        await _close(endpoint, sockets, window)
    # Even with no socket left to close: connections lost a moment ago (clients that
    # left just before the SIGTERM) are out of ``endpoint.sockets`` already, but their
    # Sockets' closes still run (lean path: a task each, see wsconn.busy). Returning
    # without them let the cleanup close the presence store and the broker under
    # their untracks (issue 27: the slow stop, users left to the presence timeout).
    await settle(endpoint, settle_for)


async def settle(endpoint: Endpoint, limit: float = SETTLE, *, sockets: bool = True) -> None:
    """Wait (at most ``limit`` s) until every closed socket has left its channels: its
    presences untracked (the other nodes' lists lose its users now, not a presence
    timeout later) and its topics unsubscribed, before the node stops its broker.
    ``sockets=False``: only for the Socket closes already running (not for sockets
    still in ``endpoint.sockets`` to go)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while sockets and len(endpoint.sockets) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    pending = busy()
    if pending and loop.time() < deadline:
        await asyncio.wait(pending, timeout=deadline - loop.time())


async def _close(endpoint: Endpoint, sockets: list[Socket], window: float) -> None:
    per_step = max(1, -(-len(sockets) // STEPS))
    pause = window / STEPS if len(sockets) > per_step else 0.0
    for i in range(0, len(sockets), per_step):
        for socket in sockets[i : i + per_step]:
            close_restart(socket)
        if pause and i + per_step < len(sockets):
            await asyncio.sleep(pause)
    # Sockets that connected meanwhile (the listener is already closed, but a handshake
    # may have been in flight).
    for socket in list(endpoint.sockets):
        close_restart(socket)
