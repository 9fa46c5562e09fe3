"""Hand-built WebSocket frames and a raw client over asyncio streams (exact bytes both ways)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from roost.protocol.wsread import unmask

KEY = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame: FIN/RSV/opcode, the length in its shortest form, mask, payload."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + KEY + unmask(KEY, payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def upgrade_request(path: str = "/socket/websocket?vsn=2.0.0", *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A TCP connection to a node: write bytes, read an HTTP head or server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def head(self, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
        """The status and headers (lower-case names) of the next response head."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.head(timeout)
        n = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return status, headers, body

    async def upgrade(self, request: bytes | None = None, timeout: float = 5.0) -> None:
        self.send(request or upgrade_request())
        status, _ = await self.head(timeout)
        assert status == 101

    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); server frames are never masked."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not b1 & 0x80, "server frames are unmasked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def recv_close(self, timeout: float = 5.0) -> int:
        """Skip frames up to the server's close; its code (then the server hangs up)."""
        while True:
            opcode, payload = await self.recv(timeout)
            if opcode == 8:
                assert await asyncio.wait_for(self.reader.read(), timeout) == b""
                return int(struct.unpack("!H", payload[:2])[0])

    async def closed(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()
