"""An asyncio Phoenix Channels client (V2 or V1), used by the CLI, benchmarks and tests."""

from .client import Client, ClientChannel, JoinRefused, PushReply

__all__ = ["Client", "ClientChannel", "JoinRefused", "PushReply"]
