"""The systems scenario ``peers`` measures, its configuration and its wire constants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOPIC = "bench:fanout"
EVENT = "new:msg"
PAYLOAD = {"user": "al", "body": "hello world, from roost", "id": "018c2a"}
ROOM = "bench"
IDLE = 3.0
PHX_PATH = "/socket/websocket?vsn=2.0.0"
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"
WS_PATH = "/ws"


@dataclass(frozen=True)
class System:
    key: str
    label: str
    client: str  # phoenix | eio | ws
    needs: str  # "" | python | node: what --setup must have installed
    redis: bool


SYSTEMS = (
    System("raw", "raw limit (asyncio transport.write)", "phoenix", "", False),
    System("roost", "roost (one node, memory broker)", "phoenix", "", False),
    System("roost-redis", "roost + Redis (one node, topic mode)", "phoenix", "", True),
    System("python-socketio", "python-socketio + AsyncRedisManager (aiohttp)", "eio",
           "python", True),
    System("node-socketio", "Node socket.io + @socket.io/redis-adapter", "eio", "node", True),
    System("channels-pubsub", "Django Channels + RedisPubSubChannelLayer (uvicorn)", "ws",
           "python", True),
    System("channels-core", "Django Channels + RedisChannelLayer (uvicorn)", "ws",
           "python", True),
    System("broadcaster", "broadcaster (Redis) + Starlette (uvicorn)", "ws", "python", True),
)  # fmt: skip
BY_KEY = {s.key: s for s in SYSTEMS}


@dataclass
class Config:
    clients: int = 1000
    messages: int = 200  # most per round
    min_messages: int = 20
    rounds: int = 3
    round_s: float = 2.0
    only: tuple[str, ...] = ()
    peers_dir: Path | None = None
    redis_url: str | None = None
    out: Path = Path("bench-out")
    cross_node: bool = False
    # Latency phase: stamped messages at a fixed rate every system sustains with these
    # subscribers (the slowest peer does ~4,000 deliveries/s); 0 s: no latency phase.
    latency_rate: float = 2.0
    latency_s: float = 10.0


def systems_for(cfg: Config) -> list[System]:
    """The systems a run measures: ``--only``, and only the Redis ones across nodes."""
    return [
        s
        for s in SYSTEMS
        if (not cfg.only or s.key in cfg.only) and (s.redis or not cfg.cross_node)
    ]


CROSS_LABELS = {"roost-redis": "roost + Redis (two nodes, topic mode)"}


def label_for(system: System, cfg: Config) -> str:
    if cfg.cross_node:
        return CROSS_LABELS.get(system.key, system.label + ", two instances")
    return system.label


def default_peers_dir() -> Path:
    """``peers/`` beside this package (bench/peers of the checkout, where ``pip install -e
    ./bench`` leaves it); else ./bench/peers or ./peers of the working directory."""
    beside = Path(__file__).resolve().parent.parent / "peers"
    for cand in (beside, Path.cwd() / "bench" / "peers", Path.cwd() / "peers"):
        if (cand / "requirements.txt").is_file():
            return cand
    return beside
