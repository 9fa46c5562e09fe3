"""Peer: encode/broadcaster (Redis backend) + Starlette on uvicorn (uvloop, httptools).

The fanout workload of ``roost-bench peers``, written as broadcaster's README does a
chat: each WebSocket at ``/ws`` subscribes to channel ``bench`` (one subscription
per socket), sends ``{"joined":true}``, then forwards every event with
``send_text``; ``GET /fire?count=N`` publishes N pre-encoded chat frames.

Run: ``python broadcaster_server.py PORT REDIS_URL`` (bench/peers/.venv).
"""

import asyncio
import contextlib
import json
import sys
import time

from broadcaster import Broadcast
from paced import pace
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

ROOM = "bench"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}
TEXT = json.dumps({"topic": ROOM, "event": "new:msg", "payload": PAYLOAD}, separators=(",", ":"))


def application(redis_url: str) -> Starlette:
    broadcast = Broadcast(redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await broadcast.connect()
        try:
            # Two races in broadcaster 0.3.1 (with redis-py 8), worked around here, not
            # speed settings: (1) sockets subscribing to a channel nobody holds yet each
            # call the backend, and the last one's set replaces the others' (their
            # queues never get a message): one subscriber held from the start (drained,
            # so its queue stays empty) makes every socket join the set; (2) the Redis
            # listener task may start before the SUBSCRIBE is done, see no channel and
            # stop for good: subscribing the backend once more restarts it.
            async with broadcast.subscribe(channel=ROOM) as holder:
                await broadcast._backend.subscribe(ROOM)

                async def drain():
                    async for _ in holder:
                        pass

                task = asyncio.create_task(drain())
                try:
                    yield
                finally:
                    task.cancel()
        finally:
            await broadcast.disconnect()

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async with broadcast.subscribe(channel=ROOM) as subscriber:
            await websocket.send_text('{"joined":true}')
            async for event in subscriber:
                await websocket.send_text(event.message)

    async def fire(request):
        q = request.query_params
        t0 = time.perf_counter()
        if "rate" in q:

            async def emit(payload):
                text = json.dumps(
                    {"topic": ROOM, "event": "new:msg", "payload": payload}, separators=(",", ":")
                )
                await broadcast.publish(channel=ROOM, message=text)

            await pace(float(q["rate"]), float(q.get("duration", "1")), emit)
            return PlainTextResponse(str(time.perf_counter() - t0))
        for _ in range(int(q.get("count", "1"))):
            await broadcast.publish(channel=ROOM, message=TEXT)
        return PlainTextResponse(str(time.perf_counter() - t0))

    async def healthz(request):
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws_endpoint),
            Route("/fire", fire),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        application(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        loop="uvloop",
        http="httptools",
        ws="websockets",
        backlog=4096,
        ws_per_message_deflate=False,
        access_log=False,
        ws_ping_interval=None,
    )
