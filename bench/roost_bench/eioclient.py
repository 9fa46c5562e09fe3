"""The subscribers of the ``peers`` scenario: Engine.IO 4 over WebSocket, and joining."""

from __future__ import annotations

import asyncio

from .harness import (
    Tally,
    TallyClient,
    close_clients,
    open_tally_clients,
    wait_delivered,
)
from .loadclient import CountingClient, client_frame, join_frame
from .peersystems import EIO_PATH, PHX_PATH, ROOM, TOPIC, WS_PATH, System


def _parse_frame(buf: bytes) -> tuple[int, bytes, int] | None:
    """(opcode, payload, bytes used) of the first unmasked server frame, if complete."""
    if len(buf) < 2:
        return None
    n = buf[1] & 0x7F
    i = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, i = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, i = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < i + n:
        return None
    return buf[0] & 0x0F, buf[i : i + n], i + n


class EioClient(TallyClient):
    """Engine.IO 4 / Socket.IO 5 over WebSocket: connect, join the room, then count.

    Handshake: server ``0{...}`` (open) -> client ``40`` (connect to ``/``) -> server
    ``40{...}`` -> client ``420["join","bench"]`` -> server ``430[...]`` (the ack).
    Until the ack, frames are parsed (and pings ``2`` answered ``3``); after it, bytes
    are only counted, like every other client.
    """

    def __init__(self, host: str, path: str, tally: Tally) -> None:
        super().__init__(host, path, tally)
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.counting = False

    def data_received(self, data: bytes) -> None:
        if self.counting:  # upgraded: counted as every other client counts
            super().data_received(data)
            return
        self.buf += data
        if not self.upgraded:
            body = self.take_upgrade()
            if body is None:
                return
            self.buf = self.buf[body:]
        while not self.counting and (frame := _parse_frame(self.buf)) is not None:
            _, packet, used = frame
            self.buf = self.buf[used:]
            self._packet(packet)
        if self.counting and self.buf:
            self.received += len(self.buf)
            self.tally.total += len(self.buf)
            self.buf = b""

    def _packet(self, p: bytes) -> None:
        if p.startswith(b"0"):
            self.send(client_frame(b"40"))
        elif p.startswith(b"40"):
            self.send(client_frame(b'420["join","' + ROOM.encode() + b'"]'))
        elif p.startswith(b"430"):
            self.counting = True
            self.received = 0
            if not self.joined.done():
                self.joined.set_result(None)
        elif p == b"2":
            self.send(client_frame(b"3"))
        elif p.startswith(b"44") and not self.joined.done():  # connect_error
            self.joined.set_exception(ConnectionError(p.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("connection lost before the join ack"))


async def open_and_join(system: System, port: int, n: int, tally: Tally) -> list[CountingClient]:
    if system.client == "eio":
        clients = await open_tally_clients(port, EIO_PATH, n, tally, factory=EioClient)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.joined for c in clients if isinstance(c, EioClient))), 60
            )
        except BaseException:
            close_clients(clients)
            raise
        return clients
    path = PHX_PATH if system.client == "phoenix" else WS_PATH
    clients = await open_tally_clients(port, path, n, tally)
    if system.client == "phoenix":
        join = join_frame(TOPIC)
        for c in clients:
            c.send(join)
    if not await wait_delivered(clients, tally, 1, idle=15, cap=60):
        close_clients(clients)
        raise RuntimeError("not every client was told it joined")
    return clients
