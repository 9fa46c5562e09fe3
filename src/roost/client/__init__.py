"""An asyncio Phoenix Channels client (V2 or V1), used by the CLI, benchmarks and tests."""

from .backoff import RECONNECT, REJOIN, Backoff
from .client import Client, ClientChannel, JoinRefused, PushReply, retry_after

__all__ = [
    "RECONNECT",
    "REJOIN",
    "Backoff",
    "Client",
    "ClientChannel",
    "JoinRefused",
    "PushReply",
    "retry_after",
]
