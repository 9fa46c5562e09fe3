"""Sockets, channels and routing: the application-facing layer (Phoenix.Socket/Channel)."""

from .channel import Channel
from .endpoint import Endpoint, Limits
from .reply import JoinError, Reply
from .router import Router
from .socket import InvalidFrame, Socket

__all__ = [
    "Channel",
    "Endpoint",
    "InvalidFrame",
    "JoinError",
    "Limits",
    "Reply",
    "Router",
    "Socket",
]
