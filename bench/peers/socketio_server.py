"""Peer: python-socketio + AsyncRedisManager, served by aiohttp (uvloop).

The fanout workload of ``roost-bench peers``: clients connect over Engine.IO 4
(WebSocket transport), emit ``join`` with the room name (acknowledged), and
``GET /fire?count=N`` emits N ``new:msg`` chat messages to the room;
``GET /fire?rate=R&duration=D`` emits stamped ones at a fixed rate (paced.py). With the Redis
manager every emit goes through Redis and comes back to be delivered, as on a
cluster. Ping interval raised so no ping crosses a measurement (not a speed setting).

Run: ``python socketio_server.py PORT REDIS_URL`` (bench/peers/.venv).
"""

import asyncio
import sys
import time

import socketio
from aiohttp import web
from paced import pace

ROOM = "bench"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}


def main(port: int, redis_url: str) -> None:
    mgr = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=mgr,
        ping_interval=600,
        ping_timeout=600,
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def join(sid, room):
        await sio.enter_room(sid, room)
        return "ok"

    async def fire(request):
        t0 = time.perf_counter()
        if "rate" in request.query:

            async def emit(payload):
                await sio.emit("new:msg", payload, room=ROOM)

            q = request.query
            await pace(float(q["rate"]), float(q.get("duration", "1")), emit)
            return web.Response(text=str(time.perf_counter() - t0))
        count = int(request.query.get("count", "1"))
        for _ in range(count):
            await sio.emit("new:msg", PAYLOAD, room=ROOM)
        return web.Response(text=str(time.perf_counter() - t0))

    async def healthz(request):
        return web.Response(text="ok")

    app.router.add_get("/fire", fire)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    main(int(sys.argv[1]), sys.argv[2])
