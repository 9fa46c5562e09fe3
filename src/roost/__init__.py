"""roost: a Phoenix-Channels-compatible real-time server, scaled out through Redis Pub/Sub."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ below imports on first use
    from .application import Application
    from .channels import Channel, ConnectRefused, Endpoint, JoinError, Reply, Router

__version__ = "0.1.0"


def publish(redis_url: str, topic: str, event: str, payload: Any, **options: Any) -> int | None:
    """Broadcast into roost from another process sharing Redis (see roost.publish)."""
    from .publisher import publish as _publish

    return _publish(redis_url, topic, event, payload, **options)


async def publish_async(
    redis_url: str, topic: str, event: str, payload: Any, **options: Any
) -> int | None:
    from .publisher import publish_async as _publish_async

    return await _publish_async(redis_url, topic, event, payload, **options)


#: The application API, imported on first use (``import roost`` stays light for
#: processes that only publish).
_API = {
    "Application": "roost.application",
    "Channel": "roost.channels",
    "ConnectRefused": "roost.channels",
    "Endpoint": "roost.channels",
    "JoinError": "roost.channels",
    "Reply": "roost.channels",
    "Router": "roost.channels",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'roost' has no attribute {name!r}")


__all__ = [
    "Application",
    "Channel",
    "ConnectRefused",
    "Endpoint",
    "JoinError",
    "Reply",
    "Router",
    "__version__",
    "publish",
    "publish_async",
]
