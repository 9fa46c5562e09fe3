"""Peer: Django Channels + channels_redis on uvicorn (uvloop, httptools, websockets).

The fanout workload of ``roost-bench peers``: a WebSocket at ``/ws`` joins group
``bench`` on connect and then sends ``{"joined":true}``; ``GET /fire?count=N`` does
N ``group_send`` of one pre-encoded chat frame, which each consumer sends as is.
``--layer core`` is channels_redis.core.RedisChannelLayer (capacity raised from 100
to 100,000 so that a burst is not silently dropped: the benchmark measures speed,
not the default's loss; pool cap raised, see below); ``--layer pubsub`` is RedisPubSubChannelLayer.

Run: ``python channels_server.py PORT REDIS_URL --layer core|pubsub`` (bench/peers/.venv).
"""

import argparse
import json
import time
from urllib.parse import parse_qs

import django
from django.conf import settings
from paced import pace

ROOM = "bench"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}
TEXT = json.dumps({"topic": ROOM, "event": "new:msg", "payload": PAYLOAD}, separators=(",", ":"))

LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}


def configure(redis_url: str, layer: str) -> None:
    config = {"hosts": [redis_url]}
    if layer == "core":
        # redis-py 8 pools hold at most 100 connections and fail past that (older ones
        # had no cap); the core layer takes one per concurrent group_add.
        config = {"hosts": [{"address": redis_url, "max_connections": 5000}], "capacity": 100_000}
    settings.configure(
        DEBUG=False,
        SECRET_KEY="roost-bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": {"BACKEND": LAYERS[layer], "CONFIG": config}},
    )
    django.setup()


def application():
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.layers import get_channel_layer
    from channels.routing import ProtocolTypeRouter

    class Bench(AsyncWebsocketConsumer):
        async def connect(self):
            await self.channel_layer.group_add(ROOM, self.channel_name)
            await self.accept()
            await self.send(text_data='{"joined":true}')

        async def disconnect(self, code):
            await self.channel_layer.group_discard(ROOM, self.channel_name)

        async def chat_message(self, event):
            await self.send(text_data=event["text"])

    async def http(scope, receive, send):
        path = scope["path"]
        body = b"not found"
        status = 404
        if path == "/healthz":
            status, body = 200, b"ok"
        elif path == "/fire":
            query = parse_qs(scope.get("query_string", b"").decode())
            layer = get_channel_layer()
            t0 = time.perf_counter()
            if "rate" in query:

                async def emit(payload):
                    text = json.dumps(
                        {"topic": ROOM, "event": "new:msg", "payload": payload},
                        separators=(",", ":"),
                    )
                    await layer.group_send(ROOM, {"type": "chat.message", "text": text})

                duration = float(query.get("duration", ["1"])[0])
                await pace(float(query["rate"][0]), duration, emit)
            else:
                for _ in range(int(query.get("count", ["1"])[0])):
                    await layer.group_send(ROOM, {"type": "chat.message", "text": TEXT})
            status, body = 200, str(time.perf_counter() - t0).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return ProtocolTypeRouter({"http": http, "websocket": Bench.as_asgi()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("redis_url")
    parser.add_argument("--layer", choices=sorted(LAYERS), default="core")
    a = parser.parse_args()
    configure(a.redis_url, a.layer)
    import uvicorn

    uvicorn.run(
        application(),
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        lifespan="off",
        loop="uvloop",
        http="httptools",
        ws="websockets",
        backlog=4096,
        ws_per_message_deflate=False,
        access_log=False,
        ws_ping_interval=None,
    )


if __name__ == "__main__":
    main()
