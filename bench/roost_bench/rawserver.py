"""The raw limit: a bare asyncio server writing one pre-encoded frame to each transport.

It does the WebSocket upgrade, answers any client frame containing ``phx_join`` with
a fixed reply frame, and on ``GET /fire?count=N`` writes the benchmark's broadcast
frame N times to every connected transport in a plain loop — what roost's fastlane
would be with zero overhead. Run: ``python -m roost_bench.rawserver PORT FRAMEHEX``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import time
from typing import cast
from urllib.parse import parse_qs, urlsplit

from roost.protocol.wsframe import header

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REPLY = b'["1","1","bench:fanout","phx_reply",{"status":"ok","response":{}}]'


class RawConn(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            if b"phx_join" in data:
                self.transport.write(header(1, len(REPLY)) + REPLY)
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        head = self.buf.decode("latin-1")
        path = head.split(" ", 2)[1]
        if path.startswith("/fire"):
            count = int(parse_qs(urlsplit(path).query).get("count", ["1"])[0])
            asyncio.get_running_loop().create_task(self.server.fire(self.transport, count))
            return
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.upgraded = True
        self.server.conns.append(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.server.conns:
            self.server.conns.remove(self.transport)


class RawServer:
    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.conns: list[asyncio.Transport] = []

    async def fire(self, control: asyncio.Transport, count: int) -> None:
        t0 = time.perf_counter()
        frame = self.frame
        for _ in range(count):
            for t in self.conns:
                t.write(frame)
            await asyncio.sleep(0)
        body = f"{time.perf_counter() - t0}".encode()
        control.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        control.close()


async def main(port: int, frame: bytes) -> None:
    server = RawServer(frame)
    srv = await asyncio.get_running_loop().create_server(
        lambda: RawConn(server), "127.0.0.1", port, backlog=4096
    )
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), bytes.fromhex(sys.argv[2])))
