"""A raw WebSocket test client: send exact frames, read decoded frames with a timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson


class RawSocket:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(cls, ws_url: str, query: str = "vsn=2.0.0", **kw: Any) -> RawSocket:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(f"{ws_url}/websocket?{query}", max_msg_size=0, **kw)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, *frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(list(frame)).decode())

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def recv(self, timeout: float = 5.0) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return orjson.loads(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        return msg  # CLOSE / CLOSED / ERROR

    async def recv_until(self, pred: Any, timeout: float = 5.0) -> Any:
        """Read frames until one matches ``pred``; return it."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if not isinstance(frame, (list, dict, bytes)):
                    raise AssertionError(f"socket closed while waiting: {frame}")
                if pred(frame):
                    return frame

    async def expect_closed(self, timeout: float = 5.0) -> int | None:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return self.ws.close_code

    async def join(self, topic: str, ref: str, payload: Any = None) -> Any:
        await self.send(ref, ref, topic, "phx_join", payload or {})
        return await self.recv_until(lambda f: isinstance(f, list) and f[1] == ref)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
