"""Graceful drain: on shutdown, close sockets with 1012 spread over a window.

Spreading the closes (instead of all at once) lets clients reconnect to the other
nodes without a thundering herd. The node reports not ready from the first moment.
"""

from __future__ import annotations

import asyncio
import logging

from ..channels import Endpoint
from ..channels.socket import CLOSE_RESTART

log = logging.getLogger("roost.drain")

STEPS = 20


async def drain(endpoint: Endpoint, window: float) -> None:
    endpoint.draining = True
    sockets = list(endpoint.sockets)
    log.info("draining %d sockets over %.1fs", len(sockets), window)
    if not sockets:
        return
    per_step = max(1, -(-len(sockets) // STEPS))
    pause = window / STEPS if len(sockets) > per_step else 0.0
    for i in range(0, len(sockets), per_step):
        for socket in sockets[i : i + per_step]:
            socket.wire.close(CLOSE_RESTART, "server restart")
        if pause and i + per_step < len(sockets):
            await asyncio.sleep(pause)
    # Sockets that connected meanwhile (the listener is already closed, but a handshake
    # may have been in flight).
    for socket in list(endpoint.sockets):
        socket.wire.close(CLOSE_RESTART, "server restart")
